"""Event decoding: the wire conventions, CloudEvents attributes and provenance."""

from __future__ import annotations

import pytest

from synapse.client.event import Event, decode
from synapse.errors import InvalidEvent
from synapse.events import Limits


def test_decode_reads_type_data_envelope_and_provenance() -> None:
    """A routed entry decodes to its type, body, CloudEvents attributes and origin."""
    fields = [
        b"type", b"model.ready", b"data", b'{"model_id": "m1"}',
        b"id", b"e-1", b"source", b"trainer", b"time", b"2026-01-01T00:00:00Z",
        b"specversion", b"1.0",
        b"synapse-source", b"ingress", b"synapse-id", b"1-0", b"synapse-route", b"models",
    ]  # fmt: skip
    event = Event.from_entry(b"model-events", b"5-0", fields, deliveries=2)
    assert event.type == "model.ready"
    assert event.data == {"model_id": "m1"}
    assert (event.id, event.source, event.time) == ("e-1", "trainer", "2026-01-01T00:00:00Z")
    assert (event.stream, event.entry_id, event.deliveries) == ("model-events", "5-0", 2)
    assert event.origin == ("ingress", "1-0")
    assert event.route == "models"
    assert event.fields == tuple(fields)
    assert event.dedupe_key == "id:e-1"
    assert event.get_field("specversion") == "1.0"


def test_decode_without_data_uses_fields_and_body_type() -> None:
    """An entry with no data field has its fields as body; no type field takes the body's."""
    event = decode("ingress", "1-0", [b"type", b"x.y", b"k", b"v"])
    assert event.data == {"type": "x.y", "k": "v"}
    assert event.id is None and event.origin is None and event.route is None
    assert event.dedupe_key == "entry:ingress/1-0"
    typed = decode("s", "1-0", [b"data", b'{"type": "a.b", "n": 1}'])
    assert typed.type == "a.b"


def test_decode_dedupe_key_falls_back_to_origin() -> None:
    """With no id, the dedupe key is the router's provenance (source, id)."""
    event = decode("d", "9-0", [b"type", b"t", b"synapse-source", b"in", b"synapse-id", b"3-1"])
    assert event.dedupe_key == "origin:in/3-1"


def test_decode_refuses_invalid_entries_with_the_router_reason() -> None:
    """Bad JSON raises InvalidEvent with the same reason code the router uses."""
    with pytest.raises(InvalidEvent) as caught:
        decode("s", "1-0", [b"type", b"t", b"data", b"{nope"])
    assert caught.value.reason == "invalid_json"
    with pytest.raises(InvalidEvent) as missing:
        decode("s", "1-0", [b"data", b"{}"])
    assert missing.value.reason == "missing_type"


def test_to_dict_is_the_json_view() -> None:
    """to_dict holds type, data, id, time, source, stream, entry_id (and origin/route)."""
    event = decode("d", "9-0", [b"type", b"t", b"data", b"{}", b"id", b"x"])
    assert event.to_dict() == {
        "type": "t", "data": {}, "id": "x", "time": None, "source": None,
        "stream": "d", "entry_id": "9-0",
    }  # fmt: skip


def test_decode_builds_the_event_the_constructor_would() -> None:
    """decode's field-by-field Event equals the keyword-built one and reads its fields."""
    fields = [b"type", b"t", b"data", b'{"a": [1]}', b"id", b"e-1"]
    event = decode(b"s", b"3-0", fields, deliveries=2)
    assert event == Event(
        type="t", data={"a": [1]}, stream="s", entry_id="3-0", deliveries=2, fields=tuple(fields)
    )
    assert event.id == "e-1" and event.get_field("type") == "t"


def test_decode_fast_path_keeps_the_size_limit() -> None:
    """An entry over max_event_bytes is refused as too_large, names and values counted."""
    fields = [b"type", b"t", b"data", b'{"a": 1}', b"pad", b"x" * 40]
    with pytest.raises(InvalidEvent) as caught:
        decode("s", "1-0", fields, limits=Limits(max_event_bytes=50))
    assert caught.value.reason == "too_large"
    assert decode("s", "1-0", fields, limits=Limits(max_event_bytes=64)).data == {"a": 1}
