"""Safe YAML with line numbers: what config files are read with.

Refuses what makes YAML dangerous or ambiguous for a config file: duplicate keys
(the later one would silently win), anchors and aliases (billion-laughs bombs; a
routing table has no need of them), non-string keys, and oversized files. Every
refusal names the file and line. Alongside the data it returns a map from each
key path to the line it stands on, so later checks can point at lines too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from synapse.errors import ConfigError
from synapse.files import TooLarge, read_bounded

#: Largest config or test file accepted; a routing table is kilobytes.
MAX_FILE_BYTES = 1 << 20

PathKey = tuple[str | int, ...]
LineMap = dict[PathKey, int]


class _Loader(yaml.SafeLoader):
    """A SafeLoader that refuses aliases while composing."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.MarkedYAMLError(
                None, None, "anchors and aliases are not allowed", event.start_mark
            )
        if self.check_event(yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            if getattr(event, "anchor", None):
                raise yaml.MarkedYAMLError(
                    None, None, "anchors and aliases are not allowed", event.start_mark
                )
        return super().compose_node(parent, index)


def read_yaml(path: Path) -> tuple[Any, LineMap]:
    """Read one YAML document; return (data, lines). Raises ConfigError with file:line."""
    data, lines, _ = read_yaml_raw(path)
    return data, lines


def read_yaml_raw(path: Path) -> tuple[Any, LineMap, bytes]:
    """``read_yaml``, plus the bytes it parsed (read once: what is hashed is what was parsed)."""
    name = str(path)
    try:
        raw = read_bounded(path, MAX_FILE_BYTES)  # stat first, then never more than the limit
    except TooLarge as exc:
        raise ConfigError.single(
            name,
            _line_at_limit(path),
            f"file is {exc.size} bytes; the limit is {MAX_FILE_BYTES} (passed on this line)",
        ) from None
    except OSError as exc:
        raise ConfigError.single(name, None, f"cannot read: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError.single(
            name, line, f"not UTF-8 text: {exc.reason} (byte {raw[exc.start]:#04x})"
        ) from exc
    data, lines = parse_yaml(text, name)
    return data, lines, raw


def _line_at_limit(path: Path) -> int | None:
    try:
        with path.open("rb") as f:
            return f.read(MAX_FILE_BYTES).count(b"\n") + 1
    except OSError:
        return None


def parse_yaml(text: str, name: str) -> tuple[Any, LineMap]:
    """Parse YAML text (named ``name`` in errors); return (data, lines)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        lines: LineMap = {}
        data = _build(loader, node, (), lines, name) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError.single(name, line, f"invalid YAML: {problem}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError.single(name, None, f"invalid YAML: {exc}") from exc
    finally:
        loader.dispose()
    return data, lines


def _build(loader: _Loader, node: yaml.Node, path: PathKey, lines: LineMap, name: str) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise ConfigError.single(name, line, "merge keys (<<) are not allowed")
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise ConfigError.single(name, line, f"keys must be strings, got {key!r}")
            if key in out:
                raise ConfigError.single(name, line, f"duplicate key {key!r}")
            lines[(*path, key)] = line
            out[key] = _build(loader, value_node, (*path, key), lines, name)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(loader, item, (*path, index), lines, name)
            for index, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)


def line_of(lines: LineMap, path: PathKey) -> int | None:
    """The line of ``path``, or of its nearest ancestor that has one."""
    while True:
        if path in lines:
            return lines[path]
        if not path:
            return None
        path = path[:-1]
