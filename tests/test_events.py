"""Entry parsing, provenance and dead-letter fields, pure (no server)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from synapse.errors import REASONS, InvalidEvent
from synapse.events import (
    DLQ_FIELD_MAX,
    ERROR_TEXT_MAX,
    Limits,
    dead_letter_fields,
    depth_exceeds,
    entry_time_ms,
    iso_ms,
    pairs,
    parse,
    strip_fields,
)

LIMITS = Limits()


def flat(**fields: str | bytes) -> list[bytes]:
    out: list[bytes] = []
    for name, value in fields.items():
        out += (name.encode(), value if isinstance(value, bytes) else value.encode())
    return out


def reason_of(fields: list[bytes], limits: Limits = LIMITS) -> str:
    with pytest.raises(InvalidEvent) as caught:
        parse(fields, limits)
    assert caught.value.reason in REASONS
    assert caught.value.detail
    return caught.value.reason


def test_type_and_body_from_fields() -> None:
    """The type is the `type` field and the body is the JSON object in `data`."""
    event_type, body = parse(flat(type="model.ready", data='{"model_id": "m1"}'), LIMITS)
    assert event_type == "model.ready"
    assert body == {"model_id": "m1"}


def test_body_from_fields_when_no_data() -> None:
    """With no `data` field the body is the entry's fields, as strings."""
    event_type, body = parse(flat(type="app.ping", host="h1", n="5"), LIMITS)
    assert event_type == "app.ping"
    assert body == {"type": "app.ping", "host": "h1", "n": "5"}


def test_type_from_body_when_no_type_field() -> None:
    """With no `type` field the type comes from the body's `type` key."""
    event_type, body = parse(flat(data='{"type": "model.updated", "v": 1}'), LIMITS)
    assert event_type == "model.updated"
    assert body["v"] == 1


def test_field_names_are_settable() -> None:
    """The type and data field names come from the settings."""
    limits = Limits(type_field=b"kind", data_field=b"payload")
    event_type, body = parse(flat(kind="x.y", payload='{"a": 1}', type="ignored"), limits)
    assert (event_type, body) == ("x.y", {"a": 1})
    assert parse(flat(payload='{"kind": "from.body"}'), limits)[0] == "from.body"


def test_type_field_beats_body_type() -> None:
    """An entry's `type` field wins over a `type` key in the body."""
    assert parse(flat(type="a.b", data='{"type": "c.d"}'), LIMITS)[0] == "a.b"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (flat(type="t", data="{not json"), "invalid_json"),
        (flat(type="t", data=""), "invalid_json"),
        (flat(type="t", data='{"a": 1,}'), "invalid_json"),
        (flat(type="t", data="[1, 2]"), "invalid_json"),  # not an object
        (flat(type="t", data='"text"'), "invalid_json"),
        (flat(type="t", data="null"), "invalid_json"),
        (flat(type="t", data=b'{"a": "\xff"}'), "invalid_encoding"),
        (flat(type="t", data=b'{"a": "\xc3"}'), "invalid_encoding"),  # truncated sequence
        (flat(type=b"model.\xff", data="{}"), "invalid_encoding"),
        (flat(type=b"model.\xff", host="h"), "invalid_encoding"),
        (flat(type="t", host=b"\xfe\xff"), "invalid_encoding"),  # a field of the body
        ([b"\xff", b"v", b"type", b"t"], "invalid_encoding"),  # a field name of the body
        (flat(data='{"model_id": "x"}'), "missing_type"),
        (flat(data='{"type": 5}'), "missing_type"),  # not a string
        (flat(data='{"type": ""}'), "missing_type"),
        (flat(type="", data="{}"), "missing_type"),
        (flat(host="h"), "missing_type"),
        ([], "missing_type"),
    ],
)
def test_bad_input_reasons(fields: list[bytes], reason: str) -> None:
    """Each class of bad input raises InvalidEvent with its reason code (errors.Reason)."""
    assert reason_of(fields) == reason


def test_too_large_by_bytes() -> None:
    """An entry whose names and values exceed max_event_bytes is too_large, before parsing."""
    limits = Limits(max_event_bytes=100)
    just = flat(type="t", data='{"a": "' + "x" * 82 + '"}')  # 4+1+4+7+82+2
    assert sum(map(len, just)) == 100
    assert parse(just, limits)[0] == "t"
    over = flat(type="t", data='{"a": "' + "x" * 200 + '"}')
    assert reason_of(over, limits) == "too_large"
    # checked before parsing: even invalid JSON reports its size first
    assert reason_of(flat(type="t", data="{" * 500), limits) == "too_large"


def test_too_large_by_field_count() -> None:
    """More fields than max_fields is too_large."""
    limits = Limits(max_fields=3)
    assert parse(flat(type="t", a="1", b="2"), limits)[0] == "t"
    assert reason_of(flat(type="t", a="1", b="2", c="3"), limits) == "too_large"


def test_too_deep_at_the_limit() -> None:
    """Nesting up to max_depth passes; one more level is too_deep."""
    limits = Limits(max_depth=5)
    ok = '{"a":' * 4 + '{"b": 1}' + "}" * 4  # depth 5
    assert parse(flat(type="t", data=ok), limits)[0] == "t"
    deep = '{"a":' * 5 + '{"b": 1}' + "}" * 5  # depth 6
    assert reason_of(flat(type="t", data=deep), limits) == "too_deep"
    lists = '{"a": ' + "[" * 5 + "]" * 5 + "}"
    assert reason_of(flat(type="t", data=lists), limits) == "too_deep"


def test_many_brackets_but_shallow_is_not_too_deep() -> None:
    """Wide documents with many brackets are fine: only depth counts."""
    limits = Limits(max_depth=3)
    wide = json.dumps({"a": [[1] for _ in range(100)]})
    assert parse(flat(type="t", data=wide), limits)[1]["a"][99] == [1]


def test_too_deep_beyond_the_json_parser_limit() -> None:
    """A document nested past the JSON parser's own limit is too_deep, not invalid_json."""
    limits = Limits(max_depth=64)
    data = "[" * 2000 + "]" * 2000
    assert reason_of(flat(type="t", data=data), limits) == "too_deep"
    data = '{"a":' * 1500 + "1" + "}" * 1500
    assert reason_of(flat(type="t", data=data), limits) == "too_deep"


def test_depth_exceeds_is_iterative() -> None:
    """depth_exceeds handles nesting far past Python's recursion limit."""
    value: Any = 1
    for _ in range(5000):
        value = [value]
    assert depth_exceeds(value, 4999)
    assert not depth_exceeds(value, 5000)
    assert not depth_exceeds({"a": 1}, 1)
    assert depth_exceeds({"a": {}}, 1)


def test_strip_fields() -> None:
    """strip_fields removes only the named pairs, keeping order."""
    fields = [b"a", b"1", b"b", b"2", b"c", b"3"]
    assert strip_fields(fields, frozenset({b"b"})) == [b"a", b"1", b"c", b"3"]


def dlq(fields: list[bytes], **kwargs: Any) -> dict[bytes, bytes]:
    args: dict[str, Any] = {
        "reason": "invalid_json",
        "error": "data is not JSON",
        "source": b"ingress",
        "entry_id": b"1700000000000-7",
        "deliveries": 1,
        "config_hash": "abc123",
        "now_ms": 1_700_000_000_123,
    }
    args.update(kwargs)
    out = dead_letter_fields(fields, **args)
    return pairs(out)


def test_dead_letter_fields() -> None:
    """A dead letter keeps the original fields and adds reason, error, source, id, etc."""
    fields = [b"type", b"t", b"data", b"{bad", b"bin", b"\xff\x00"]
    got = dlq(fields, deliveries=3)
    assert got[b"type"] == b"t" and got[b"data"] == b"{bad" and got[b"bin"] == b"\xff\x00"
    assert got[b"synapse-reason"] == b"invalid_json"
    assert got[b"synapse-error"] == b"data is not JSON"
    assert got[b"synapse-source"] == b"ingress"
    assert got[b"synapse-id"] == b"1700000000000-7"
    assert got[b"synapse-deliveries"] == b"3"
    assert got[b"synapse-config"] == b"abc123"
    assert got[b"synapse-time"] == b"2023-11-14T22:13:20.123Z"
    assert b"synapse-truncated" not in got


def test_dead_letter_truncates_large_values_with_sha256() -> None:
    """Values over DLQ_FIELD_MAX bytes are cut, with a sha256 of the whole and a note."""
    big = bytes(range(256)) * 40  # 10240 bytes
    got = dlq([b"type", b"t", b"data", big])
    assert got[b"data"] == big[:DLQ_FIELD_MAX]
    assert got[b"synapse-sha256:data"] == hashlib.sha256(big).hexdigest().encode()
    assert got[b"synapse-truncated"] == f"data:{len(big)}".encode()
    assert got[b"type"] == b"t"


def test_dead_letter_error_is_capped() -> None:
    """synapse-error holds at most ERROR_TEXT_MAX characters."""
    got = dlq([b"type", b"t"], error="e" * (ERROR_TEXT_MAX * 3))
    assert got[b"synapse-error"] == b"e" * ERROR_TEXT_MAX


def test_dead_letter_caps_field_count() -> None:
    """Only the first max_fields fields are kept, and the cut is noted."""
    fields = [x for i in range(10) for x in (f"f{i}".encode(), b"v")]
    got = dlq(fields, max_fields=4)
    assert [k for k in got if not k.startswith(b"synapse-")] == [b"f0", b"f1", b"f2", b"f3"]
    assert got[b"synapse-truncated"] == b"fields:10"


def test_dead_letter_replaces_old_verdict_and_provenance() -> None:
    """A redriven dead letter or a routed copy gets fresh synapse-* fields, each once."""
    old = dlq([b"type", b"t", b"synapse-route", b"r"], reason="no_route", error="old")
    flat_old = [x for kv in old.items() for x in kv]
    new = dead_letter_fields(
        flat_old,
        reason="schema_violation",
        error="new",
        source=b"dlq-in",
        entry_id=b"5-5",
        deliveries=1,
        config_hash="h2",
        now_ms=0,
    )
    assert new.count(b"synapse-reason") == 1
    got = pairs(new)
    assert got[b"synapse-reason"] == b"schema_violation"
    assert got[b"synapse-error"] == b"new"
    assert got[b"synapse-source"] == b"dlq-in"
    assert got[b"synapse-time"] == b"1970-01-01T00:00:00.000Z"
    assert b"synapse-route" not in got


def test_time_helpers() -> None:
    """Entry ids carry their millisecond time; iso_ms renders it in UTC."""
    assert entry_time_ms(b"1700000000123-5") == 1_700_000_000_123
    assert iso_ms(1_700_000_000_007) == "2023-11-14T22:13:20.007Z"
