"""Dead letters as the ``synapse dlq`` commands see them: one entry, the filters, selection.

A dead letter is the original producer's fields plus the ``synapse-*`` fields the
router added (reason, error, provenance, redrive count). ``Selection`` is the
``--reason/--source/--since/--until`` filter every dlq command shares, given to a
command as one parameter by ``selection_options``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from synapse import keys
from synapse.cli import common
from synapse.events import pairs


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    entry_id: str
    fields: list[bytes]

    @property
    def meta(self) -> dict[bytes, bytes]:
        return pairs(self.fields)

    def get(self, name: bytes) -> str:
        return common.text(self.meta.get(name))

    @property
    def redrives(self) -> int:
        try:
            return int(self.get(keys.F_REDRIVES) or 0)
        except ValueError:
            return 0

    def original(self) -> list[bytes]:
        """The fields as the producer wrote them: every synapse-* field stripped."""
        out: list[bytes] = []
        for i in range(0, len(self.fields) - 1, 2):
            if not self.fields[i].startswith(b"synapse-"):
                out += (self.fields[i], self.fields[i + 1])
        return out

    def as_json(self, full: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.entry_id,
            "time": self.get(keys.F_TIME) or common.id_time(self.entry_id),
            "reason": self.get(keys.F_REASON),
            "error": self.get(keys.F_ERROR),
            "source": self.get(keys.F_SOURCE),
            "source_id": self.get(keys.F_ID),
            "type": self.get(b"type") or None,
            "deliveries": int(self.get(keys.F_DELIVERIES) or 0),
            "redrives": self.redrives,
            "config": self.get(keys.F_CONFIG),
            "truncated": self.get(keys.F_TRUNCATED) or None,
        }
        if full:
            data["fields"] = {common.text(k): common.text(v) for k, v in self.meta.items()}
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """Which dead letters a command acts on; ``since``/``until`` as given (time or id)."""

    reasons: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None

    @property
    def narrowed(self) -> bool:
        """Whether any filter was given (otherwise: every dead letter)."""
        return bool(self.reasons or self.sources or self.since or self.until)


def select(
    client: common.Client, stream: str, chosen: Selection, ids: tuple[str, ...] = ()
) -> Iterator[DeadLetter]:
    """Dead letters matching every filter (or exactly ``ids``), oldest first, up to the last
    one present now. The time bounds are parsed at once, before the first entry is read."""
    since = common.parse_when(chosen.since) if chosen.since else None
    until = common.parse_when(chosen.until) if chosen.until else None
    if ids:
        return _by_id(client, stream, tuple(common.entry_id(i) for i in ids))
    return _scan(client, stream, chosen, since, until)


def _by_id(client: common.Client, stream: str, ids: tuple[str, ...]) -> Iterator[DeadLetter]:
    for entry_id in ids:
        for eid, fields in common.xrange(client, stream, entry_id, entry_id, 1):
            yield DeadLetter(entry_id=common.text(eid), fields=fields)


def _scan(
    client: common.Client, stream: str, chosen: Selection, since: str | None, until: str | None
) -> Iterator[DeadLetter]:
    end = until or common.last_id(client, stream)
    if end is None:
        return
    for eid, fields in common.scan_range(client, stream, since or "-", end):
        letter = DeadLetter(entry_id=common.text(eid), fields=fields)
        if chosen.reasons and letter.get(keys.F_REASON) not in chosen.reasons:
            continue
        if chosen.sources and letter.get(keys.F_SOURCE) not in chosen.sources:
            continue
        yield letter


def stream_name(stream: str | None, config_path: Path) -> str:
    """``--stream``, else the config's dead-letter stream, else the default one."""
    if stream:
        return stream
    table = common.table_or_none(config_path)
    return table.settings.dead_letter if table else keys.DEFAULT_DEAD_LETTER


def selection_options(func: Callable[..., Any]) -> Any:
    """``--reason/--source/--since/--until``, handed to the command as ``chosen: Selection``."""

    @functools.wraps(func)
    def command(
        *args: Any,
        reasons: tuple[str, ...],
        sources: tuple[str, ...],
        since: str | None,
        until: str | None,
        **kwargs: Any,
    ) -> Any:
        chosen = Selection(reasons=reasons, sources=sources, since=since, until=until)
        return func(*args, chosen=chosen, **kwargs)

    wrapped: Any = command
    wrapped = click.option("--until", help="Up to this time or id (ISO 8601, -2h, id).")(wrapped)
    wrapped = click.option("--since", help="From this time or id (ISO 8601, -2h, id).")(wrapped)
    wrapped = click.option("--source", "sources", multiple=True, help="Original source (repeat).")(
        wrapped
    )
    return click.option("--reason", "reasons", multiple=True, help="Reason code (repeat).")(wrapped)


def dlq_options(func: Any) -> Any:
    """The options of every dlq command: --stream, --config, connection, --json, --debug."""
    func = click.option("--stream", help="Dead-letter stream (default: the config's).")(func)
    func = common.config_option(func)
    func = common.connection_options(func)
    func = common.json_option(func)
    return common.debug_option(func)
