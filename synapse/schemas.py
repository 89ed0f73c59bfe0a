"""The schema registry: JSON Schema files loaded, checked and compiled once.

Every ``*.json`` file under the ``schemas/`` folder beside routes.yaml is read,
checked against its metaschema (draft 2020-12 unless its ``$schema`` says
otherwise) and registered under its ``$id``, or its ``file://`` URI when it has
none, so ``$ref`` between files resolves either way. Event types map to files by
the ``schemas:`` globs of the table (first match wins).

Two validators per schema, one verdict: jsonschema-rs on the hot path (compiled
at load, ~0.5 us a document) and python-jsonschema for checking the schemas
themselves and for listing every error in ``synapse route``. The test suite
proves they agree on a corpus of valid and invalid events.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs
import orjson
import referencing
import referencing.exceptions
import referencing.jsonschema

from synapse import refs, regexes
from synapse.errors import ConfigError, Problem
from synapse.files import TooLarge, read_bounded
from synapse.matching import GlobTest, compile_glob

MAX_SCHEMA_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class CompiledSchema:
    """One schema file, compiled both ways."""

    name: str
    uri: str
    fast: Any  # jsonschema_rs.Validator
    full: Any  # jsonschema.protocols.Validator, or None: readable errors from ``fast``

    def error(self, body: Any) -> str | None:
        """None when ``body`` is valid, else the first error, readable and located."""
        if self.fast.is_valid(body):
            return None
        errors = self.errors(body)
        return errors[0] if errors else "does not match the schema"

    def errors(self, body: Any) -> list[str]:
        """Every validation error, best first, each as ``at /path: message``.

        Linear time whatever the schema's patterns (regexes.py): nothing here can
        stall the event loop that calls it.
        """
        if self.full is not None:
            try:
                found = sorted(self.full.iter_errors(body), key=jsonschema.exceptions.relevance)
            except (referencing.exceptions.Unresolvable, RecursionError):
                pass  # refs.py rules this out at load; the fast validator still answers
            else:
                return [f"at /{_pointer(e.absolute_path)}: {e.message}" for e in found]
        return [
            f"at /{_pointer(e.instance_path)}: {e.message}" for e in self.fast.iter_errors(body)
        ]


def _pointer(path: Any) -> str:
    return "/".join(str(p) for p in path)


@dataclass(frozen=True, slots=True)
class SchemaRegistry:
    """Event type -> compiled schema, by the table's globs."""

    folder: Path
    rules: tuple[tuple[str, GlobTest, CompiledSchema], ...]
    files: Mapping[str, CompiledSchema]
    digest: str

    def schema_for(self, event_type: str) -> CompiledSchema | None:
        """The schema of the first glob matching ``event_type`` (uncached: the router's
        cache is ``routing.Routing.schema_for``)."""
        return next((s for _, test, s in self.rules if test(event_type)), None)


def load_registry(
    folder: Path,
    mapping: Mapping[str, str],
    config_name: str,
    mapping_lines: Mapping[str, int | None],
) -> SchemaRegistry:
    """Load every schema under ``folder`` and bind ``mapping`` (glob -> file) to them."""
    import hashlib

    problems: list[Problem] = []
    documents: dict[str, tuple[str, dict[str, Any]]] = {}  # rel name -> (uri, schema)
    raw_texts: dict[str, bytes] = {}
    digest = hashlib.sha256()
    if folder.is_dir():
        for path in sorted(folder.rglob("*.json")):
            rel = path.relative_to(folder).as_posix()
            raw_texts[rel] = b""  # present, even if it fails to load (reported on its own)
            loaded = _read_schema(path, problems)
            if loaded is None:
                continue
            raw, schema = loaded
            raw_texts[rel] = raw
            digest.update(rel.encode() + b"\0" + raw + b"\0")
            declared = schema.get("$id")
            uri = declared if isinstance(declared, str) else path.resolve().as_uri()
            if "$id" not in schema:
                schema = {"$id": uri, **schema}
            documents[rel] = (uri, schema)

    for bad, at, message in list(refs.dangling(documents)):
        problems.append(Problem(str(folder / bad), json_line(raw_texts[bad], at), message))
        documents.pop(bad, None)  # compiled by neither validator: reported, not crashed on
    resources = [
        (
            uri,
            referencing.Resource.from_contents(
                schema, default_specification=referencing.jsonschema.DRAFT202012
            ),
        )
        for uri, schema in documents.values()
    ]
    py_registry: referencing.Registry[Any] = referencing.Registry().with_resources(resources)
    try:
        rs_registry = jsonschema_rs.Registry(
            [(uri, schema) for uri, schema in documents.values()], retriever=_never_fetch
        )
    except ValueError as exc:  # a reference refs.dangling did not foresee: still a problem
        problems.append(Problem(str(folder), None, f"cannot resolve references: {exc}"))
        raise ConfigError(problems) from None

    compiled: dict[str, CompiledSchema] = {}
    rs_only = regexes.needs_backtracking_engine([s for _, s in documents.values()])
    for rel, (uri, schema) in documents.items():
        where = str(folder / rel)
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            pointer = "/".join(str(p) for p in exc.absolute_path)
            line = json_line(raw_texts[rel], tuple(exc.absolute_path))
            problems.append(Problem(where, line, f"invalid schema at /{pointer}: {exc.message}"))
            continue
        try:
            fast = jsonschema_rs.validator_for(
                schema,
                registry=rs_registry,
                base_uri=uri,
                retriever=_never_fetch,
                pattern_options=regexes.LINEAR,
            )
        except Exception as exc:  # jsonschema-rs raises several types for bad refs
            problems.append(Problem(where, None, f"cannot compile: {exc}"))
            continue
        full = None if rs_only else regexes.linear_validator(cls)(schema, registry=py_registry)
        compiled[rel] = CompiledSchema(name=rel, uri=uri, fast=fast, full=full)

    rules: list[tuple[str, GlobTest, CompiledSchema]] = []
    for glob, rel in mapping.items():
        target = compiled.get(rel.removeprefix("./"))
        if target is None:
            if rel.removeprefix("./") not in raw_texts:
                problems.append(
                    Problem(
                        config_name,
                        mapping_lines.get(glob),
                        f"schema file {rel!r} not found in {folder}"
                        + ("" if folder.is_dir() else " (no such folder)"),
                    )
                )
            continue
        rules.append((glob, compile_glob(glob), target))
    if problems:
        raise ConfigError(problems)
    return SchemaRegistry(
        folder=folder, rules=tuple(rules), files=compiled, digest=digest.hexdigest()
    )


def _never_fetch(uri: str) -> Any:
    """The retriever given to jsonschema-rs: references are never fetched (refs.py)."""
    raise ValueError(f"{uri}: not one of the schema files (references are never fetched)")


def _read_schema(path: Path, problems: list[Problem]) -> tuple[bytes, dict[str, Any]] | None:
    try:
        raw = read_bounded(path, MAX_SCHEMA_BYTES)  # stat first: a 3 GB file is never read
    except TooLarge as exc:
        message = f"schema file is {exc.size} bytes; the limit is {MAX_SCHEMA_BYTES}"
        problems.append(Problem(str(path), None, message))
        return None
    except OSError as exc:
        problems.append(Problem(str(path), None, f"cannot read: {exc.strerror or exc}"))
        return None
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        problems.append(Problem(str(path), line, f"not UTF-8 text: {exc.reason}"))
        return None
    try:
        schema = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        problems.append(Problem(str(path), exc.lineno, f"invalid JSON: {exc.msg}"))
        return None
    if not isinstance(schema, dict):
        problems.append(Problem(str(path), 1, "a schema file must hold a JSON object"))
        return None
    return raw, schema


def json_line(raw: bytes, pointer: tuple[str | int, ...]) -> int | None:
    """The line of the value at ``pointer`` in a JSON document (for error messages only)."""
    text = raw.decode("utf-8", "replace")
    decoder = json.JSONDecoder()
    found: dict[tuple[str | int, ...], int] = {}

    def skip(i: int) -> int:
        while text[i] in " \t\r\n":
            i += 1
        return i

    def value(i: int, path: tuple[str | int, ...]) -> int:
        i = skip(i)
        found[path] = text.count("\n", 0, i) + 1
        if text[i] not in "{[":
            return decoder.raw_decode(text, i)[1]
        close, index = ("}" if text[i] == "{" else "]"), 0
        i = skip(i + 1)
        while text[i] != close:
            if close == "}":
                key, i = json.decoder.scanstring(text, skip(i) + 1)  # type: ignore[attr-defined]
                i = value(skip(i) + 1, (*path, key))  # past the colon
            else:
                i = value(i, (*path, index))
                index += 1
            i = skip(i)
            if text[i] == ",":
                i = skip(i + 1)
        return i + 1

    # A pointer we cannot place still leaves the message naming the file and the path.
    with contextlib.suppress(ValueError, IndexError, RecursionError):
        value(0, ())
    while pointer not in found and pointer:
        pointer = pointer[:-1]
    return found.get(pointer)
