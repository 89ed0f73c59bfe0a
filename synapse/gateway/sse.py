"""Server-Sent Events framing, and the JSON a browser gets for one entry.

One message is ``id: <cursor>``, ``event: <type>`` (left out for ``named=0``)
and ``data: <json>``, then a blank line. The JSON is the event as
``synapse.client`` decodes it (``Event.to_dict``: type, data, id, time, source,
stream, entry_id, and origin/route for routed copies); it is encoded once per
entry and shared by every client. On Kafka an event with no ``time`` of its own
shows its record's timestamp. An entry that is not a valid event (a dead
letter's bad JSON, say) is still shown: its raw fields as text, with ``invalid``
holding the reason, so a watcher of the dead-letter stream sees everything in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from synapse.client.event import decode
from synapse.errors import InvalidEvent

#: The first bytes of every stream: reconnect after 1 s (browsers default to ~3 s).
PREAMBLE = b"retry: 1000\n: synapse-gateway\n\n"
KEEPALIVE = b": keep-alive\n\n"

#: The type shown for an entry that has none.
UNKNOWN_TYPE = "synapse.invalid"


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry, decoded once: its id, type, and the ``data:`` JSON."""

    stream: str
    entry_id: str
    key: tuple[int, int]
    type: str
    payload: bytes
    ms: int  # when it was written (ms since the epoch), for the lag metrics; -1 unknown


def entry(
    stream: str,
    entry_id: str,
    key: tuple[int, int],
    fields: Sequence[bytes],
    ms: int | None = None,
) -> Entry:
    """The shared, encoded view of one raw entry.

    ``ms`` is when it was written: the entry id's time on Redis (the default), the
    record's timestamp on Kafka, which also stands in for the ``time`` of an event
    whose publisher wrote none (a Redis entry's time is its id: the id is shown).
    """
    event_type, view = event_view(stream, entry_id, fields)
    if ms is None:
        ms = key[0]
    elif view.get("time") is None and ms >= 0:
        view["time"] = ms_time(ms)
    return Entry(stream, entry_id, key, event_type, orjson.dumps(view), ms)


def event_view(stream: str, entry_id: str, fields: Sequence[bytes]) -> tuple[str, dict[str, Any]]:
    """(type, JSON object) of one entry; the invalid ones keep their fields as text."""
    try:
        event = decode(stream, entry_id, fields)
    except InvalidEvent as exc:
        return _invalid_view(stream, entry_id, fields, exc.reason)
    return event.type, event.to_dict()


def _invalid_view(
    stream: str, entry_id: str, fields: Sequence[bytes], reason: str
) -> tuple[str, dict[str, Any]]:
    found = _pairs(fields)
    event_type = found.get("type") or UNKNOWN_TYPE
    return event_type, {
        "type": event_type,
        "data": None,
        "id": found.get("id"),
        "time": found.get("time"),
        "source": found.get("source"),
        "stream": stream,
        "entry_id": entry_id,
        "invalid": reason,
        "fields": found,
    }


def _pairs(fields: Sequence[bytes]) -> dict[str, str]:
    return {
        fields[i].decode("utf-8", "replace"): fields[i + 1].decode("utf-8", "replace")
        for i in range(0, len(fields) - 1, 2)
    }


def ms_time(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, as ``synapse tail`` shows a record's time."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def field_text(value: str) -> bytes:
    """``value`` safe for one SSE field line (CR, LF and NUL removed)."""
    if "\n" in value or "\r" in value or "\0" in value:
        value = value.replace("\r", "").replace("\n", "").replace("\0", "")
    return value.encode()


def message(cursor: str, event_type: str | None, payload: bytes) -> bytes:
    """One SSE message; ``event_type`` None leaves the ``event:`` line out."""
    head = b"id: " + field_text(cursor)
    if event_type is not None:
        head += b"\nevent: " + field_text(event_type)
    return head + b"\ndata: " + payload + b"\n\n"
