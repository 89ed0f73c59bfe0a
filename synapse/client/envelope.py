"""The CloudEvents 1.0 envelope ``publish`` writes: entry fields beside ``type`` and ``data``.

One published event is one entry: ``type``, ``data`` (the body as JSON), then the
CloudEvents attributes ``id`` (unique per event, chosen once so every retry of the
same publish carries it), ``source`` (the service), ``time`` (RFC 3339 UTC) and
``specversion``, and ``traceparent`` (W3C trace context, the CloudEvents
distributed-tracing extension) when a span is active. Pure: no I/O.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from synapse.client.event import F_CE_ID, F_CE_SOURCE, F_CE_SPECVERSION, F_CE_TIME, F_TRACEPARENT

SPECVERSION = b"1.0"


def new_id() -> str:
    """A fresh event id (a UUID4 as 32 hex digits)."""
    return uuid.uuid4().hex


def rfc3339_now() -> str:
    """Now as RFC 3339 UTC with milliseconds: ``2026-01-01T00:00:00.000Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dump_data(data: Any) -> bytes:
    """The body as JSON bytes; a body must be a JSON object (a dict)."""
    if not isinstance(data, dict):
        raise TypeError(f"event data must be a dict (a JSON object), got {type(data).__name__}")
    return orjson.dumps(data)


def entry_fields(
    event_type: str,
    data_json: bytes,
    *,
    event_id: str,
    source: str,
    time: str,
    traceparent: str | None = None,
    type_field: bytes = b"type",
    data_field: bytes = b"data",
    extra: dict[str, str] | None = None,
) -> list[bytes]:
    """The entry's fields, in the order they are written."""
    if not event_type:
        raise ValueError("an event type is required")
    fields = [
        type_field,
        event_type.encode(),
        data_field,
        data_json,
        F_CE_ID,
        event_id.encode(),
        F_CE_SOURCE,
        source.encode(),
        F_CE_TIME,
        time.encode(),
        F_CE_SPECVERSION,
        SPECVERSION,
    ]
    if traceparent:
        fields += (F_TRACEPARENT, traceparent.encode())
    for name, value in (extra or {}).items():
        fields += (name.encode(), value.encode())
    return fields
