"""Stream entry <-> event: parsing, provenance fields and dead-letter fields.

An entry's fields travel as a flat list ``[f1, v1, f2, v2, ...]`` of bytes, as
Redis sends them: copies keep every field byte for byte, in order, duplicates
included. Parsing is bounded before it goes deep: the size and field count are
checked first, and nesting depth is only measured when the bracket count says it
could exceed the limit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from synapse import keys
from synapse.errors import InvalidEvent, Reason, json_reason

#: A dead-letter copy keeps at most this many bytes of any one field value.
DLQ_FIELD_MAX = 4096
#: synapse-error text is capped at this many characters.
ERROR_TEXT_MAX = 1024
#: Most fields any copy or dead letter can have, whatever ``max_fields`` says: the commit
#: script passes a copy's fields to XADD as Lua values, and Lua passes at most ~8000.
LUA_MAX_FIELDS = 3900


@dataclass(frozen=True, slots=True)
class Limits:
    """The parsing bounds, from the router settings."""

    type_field: bytes = b"type"
    data_field: bytes = b"data"
    max_event_bytes: int = 1 << 20
    max_depth: int = 64
    max_fields: int = 1000


def parse(fields: Sequence[bytes], limits: Limits) -> tuple[str, Any]:
    """(event type, body) of one entry; raise InvalidEvent with the reason code."""
    if len(fields) > 2 * limits.max_fields:
        raise InvalidEvent(
            Reason.TOO_LARGE, f"{len(fields) // 2} fields; the limit is {limits.max_fields}"
        )
    size = 0
    type_raw: bytes | None = None
    data_raw: bytes | None = None
    for i in range(0, len(fields) - 1, 2):
        name, value = fields[i], fields[i + 1]
        size += len(name) + len(value)
        if name == limits.type_field:
            type_raw = value
        elif name == limits.data_field:
            data_raw = value
    if size > limits.max_event_bytes:
        raise InvalidEvent(Reason.TOO_LARGE, f"{size} bytes; the limit is {limits.max_event_bytes}")

    body = _parse_json(data_raw, limits.max_depth) if data_raw is not None else _fields_body(fields)

    if type_raw is not None:
        try:
            event_type = type_raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidEvent(
                Reason.INVALID_ENCODING, f"type field is not UTF-8: {exc.reason}"
            ) from None
    else:
        found = body.get(limits.type_field.decode()) if isinstance(body, dict) else None
        if not isinstance(found, str):
            raise InvalidEvent(Reason.MISSING_TYPE, "no type field in the entry or the body")
        event_type = found
    if not event_type:
        raise InvalidEvent(Reason.MISSING_TYPE, "the type is empty")
    return event_type, body


def _parse_json(raw: bytes, max_depth: int) -> Any:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = json_reason(exc)
        detail = {
            Reason.INVALID_ENCODING: f"data is not UTF-8: {exc}",
            Reason.TOO_DEEP: f"nesting deeper than {max_depth}",
        }.get(reason, f"data is not JSON: {exc}")
        raise InvalidEvent(reason, detail) from None
    # Depth can only exceed the limit if there are that many brackets at all.
    if raw.count(b"{") + raw.count(b"[") > max_depth and depth_exceeds(body, max_depth):
        raise InvalidEvent(Reason.TOO_DEEP, f"nesting deeper than {max_depth}")
    if not isinstance(body, dict):
        raise InvalidEvent(
            Reason.INVALID_JSON, f"data must be a JSON object, got {type(body).__name__}"
        )
    return body


def depth_exceeds(value: Any, limit: int) -> bool:
    """Whether containers nest deeper than ``limit`` (iterative: no recursion limit)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False


def _fields_body(fields: Sequence[bytes]) -> dict[str, str]:
    try:
        return {fields[i].decode(): fields[i + 1].decode() for i in range(0, len(fields) - 1, 2)}
    except UnicodeDecodeError as exc:
        raise InvalidEvent(Reason.INVALID_ENCODING, f"a field is not UTF-8: {exc.reason}") from None


#: A copy's provenance: (source stream, source entry id, route name), in field order.
Provenance = tuple[bytes, bytes, bytes]


def copy_fields(base: list[bytes], provenance: Provenance | None) -> list[bytes]:
    """The layout of a destination copy: every commit path writes exactly this.

    ``base`` is the entry's fields with no ``synapse-*`` field (``provenance_base``:
    order, duplicates and bytes kept); then, unless provenance is off, the
    provenance fields ``synapse-source``, ``synapse-id``, ``synapse-route`` in that
    order, so each name appears once even for an event routed twice. ``plan.Write``
    is the copy (its ``fields`` are this); the cluster path XADDs ``Write.fields``;
    the Lua commit receives ``base`` once per entry and appends the same three
    pairs (``commit.encode`` sends the names; tests/test_commit_encoding.py pins
    what it writes to ``Write.fields``); another backend writes this list too.
    """
    if provenance is None:
        return base
    source, entry_id, route = provenance
    return [*base, keys.F_SOURCE, source, keys.F_ID, entry_id, keys.F_ROUTE, route]


def provenance_base(fields: list[bytes]) -> list[bytes]:
    """``fields`` without any ``synapse-*`` field (usually ``fields`` itself).

    The ``synapse-`` namespace is Synapse's: whatever a producer (or an earlier
    router, or a redrive) put there is replaced on every copy and dead letter, so
    no field a producer controls can pass for provenance, a reason or a count.
    """
    for i in range(0, len(fields), 2):
        if fields[i][:8] == b"synapse-":
            return strip_ours(fields)
    return fields


def strip_ours(fields: Sequence[bytes], keep: frozenset[bytes] = frozenset()) -> list[bytes]:
    """``fields`` without the pairs whose name starts with ``synapse-`` (but for ``keep``)."""
    out: list[bytes] = []
    for i in range(0, len(fields) - 1, 2):
        if not fields[i].startswith(b"synapse-") or fields[i] in keep:
            out += (fields[i], fields[i + 1])
    return out


def strip_fields(fields: Sequence[bytes], names: frozenset[bytes]) -> list[bytes]:
    """``fields`` without the pairs whose name is in ``names``."""
    out: list[bytes] = []
    for i in range(0, len(fields) - 1, 2):
        if fields[i] not in names:
            out += (fields[i], fields[i + 1])
    return out


def dead_letter_fields(
    fields: Sequence[bytes],
    *,
    reason: str,
    error: str,
    source: bytes,
    entry_id: bytes,
    deliveries: int,
    config_hash: str,
    now_ms: int,
    max_fields: int = 1000,
    destination: tuple[bytes, bytes] | None = None,
) -> list[bytes]:
    """The dead-letter entry: original fields (large ones truncated, with a sha256) + why.

    Every ``synapse-*`` field of the original is dropped (a producer's, or a redriven
    dead letter's old verdict) and Synapse's own are written. ``destination``
    (stream, route) marks the dead letter of one refused destination: it records
    ``synapse-destination`` and ``synapse-route``, and a redrive writes it there only.
    """
    out: list[bytes] = []
    truncated: list[str] = []
    pairs = len(fields) // 2
    max_fields = min(max_fields, LUA_MAX_FIELDS)
    for i in range(0, min(len(fields) - 1, 2 * max_fields), 2):
        name, value = fields[i], fields[i + 1]
        if len(out) + (4 if len(value) > DLQ_FIELD_MAX else 2) > 2 * max_fields:
            # a sha256 field per cut value counts too: the dead letter must fit the commit
            truncated.append(f"fields:{pairs}")
            break
        if name.startswith(b"synapse-"):
            continue  # ours alone: a producer's is dropped, a redriven verdict replaced
        if len(value) > DLQ_FIELD_MAX:
            out += (
                name,
                value[:DLQ_FIELD_MAX],
                keys.F_SHA256_PREFIX + name,
                hashlib.sha256(value).hexdigest().encode(),
            )
            truncated.append(f"{name.decode('utf-8', 'replace')}:{len(value)}")
        else:
            out += (name, value)
    if pairs > max_fields and f"fields:{pairs}" not in truncated:
        truncated.append(f"fields:{pairs}")
    if destination is not None:
        out += (keys.F_DESTINATION, destination[0], keys.F_ROUTE, destination[1])
    out += (
        keys.F_REASON,
        reason.encode(),
        keys.F_ERROR,
        error[:ERROR_TEXT_MAX].encode("utf-8", "replace"),
        keys.F_SOURCE,
        source,
        keys.F_ID,
        entry_id,
        keys.F_DELIVERIES,
        str(deliveries).encode(),
        keys.F_CONFIG,
        config_hash.encode(),
        keys.F_TIME,
        iso_ms(now_ms).encode(),
    )
    if truncated:
        out += (keys.F_TRUNCATED, ",".join(truncated).encode())
    return out


def iso_ms(ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC with milliseconds."""
    stamp = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def entry_time_ms(entry_id: bytes) -> int:
    """The millisecond timestamp in a stream entry id (``1700000000000-0``)."""
    return int(entry_id.split(b"-", 1)[0])


def pairs(fields: Sequence[bytes]) -> dict[bytes, bytes]:
    """Fields as a dict (last duplicate wins): for display, never for copies."""
    return {fields[i]: fields[i + 1] for i in range(0, len(fields) - 1, 2)}
