"""Kafka record <-> entry mapping (synapse/kafka/records.py), through the one copy layout."""

from __future__ import annotations

import pytest

from synapse import keys
from synapse.events import Limits, copy_fields, parse, provenance_base
from synapse.kafka.records import (
    Record,
    entry_id,
    position,
    read_entry,
    to_entry,
    to_record,
    with_provenance,
)
from synapse.plan import Write

HEADERS = [("type", b"order.created"), ("producer", b"shop"), ("producer", b"again")]
VALUE = b'{"order_id": 7, "total": 12.5}'


def test_a_record_parses_as_the_event_its_value_and_headers_make() -> None:
    """The value is the JSON body, the type header the type; the id is <partition>-<offset>."""
    entry, fields = to_entry(3, 41, VALUE, HEADERS)
    assert entry == b"3-41"
    assert fields is not None
    assert parse(fields, Limits()) == ("order.created", {"order_id": 7, "total": 12.5})


def test_the_value_wins_over_a_data_header() -> None:
    """A header named data does not replace the body: the value comes last."""
    _, fields = to_entry(0, 0, VALUE, [("type", b"t"), ("data", b'{"forged": 1}')])
    assert fields is not None
    assert parse(fields, Limits()) == ("t", {"order_id": 7, "total": 12.5})
    assert to_record(fields, None) == Record(
        VALUE, [("type", b"t"), ("data", b'{"forged": 1}')], None
    )


def test_a_copy_is_the_record_with_provenance_headers_and_the_same_key() -> None:
    """A copy (events.copy_fields) maps back to the value, the headers in order, then
    synapse-source / synapse-id / synapse-route; the key is kept."""
    entry, fields = to_entry(2, 9, VALUE, [*HEADERS, ("synapse-route", b"forged")])
    assert fields is not None
    copy = copy_fields(provenance_base(fields), (b"orders", entry, b"to-billing"))
    record = to_record(copy, b"customer-5")
    assert record.value == VALUE
    assert record.key == b"customer-5"
    assert record.headers == [
        *HEADERS,
        (keys.F_SOURCE.decode(), b"orders"),
        (keys.F_ID.decode(), b"2-9"),
        (keys.F_ROUTE.decode(), b"to-billing"),
    ]


def test_a_tombstone_has_no_data_field_and_maps_back_to_no_value() -> None:
    """A record without a value has no data field; its headers are the body; back, no value."""
    _, fields = to_entry(0, 5, None, [("type", b"t"), ("n", None)])
    assert fields == [b"type", b"t", b"n", b""]
    assert parse(fields, Limits()) == ("t", {"type": "t", "n": ""})
    assert to_record(fields, b"k") == Record(None, [("type", b"t"), ("n", b"")], b"k")


def test_another_data_field_name_is_honoured() -> None:
    """With data_field set, the value travels under that name and comes back as the value."""
    _, fields = to_entry(0, 1, VALUE, [("type", b"t")], data_field=b"payload")
    assert fields == [b"type", b"t", b"payload", VALUE]
    assert to_record(fields, None, data_field=b"payload").value == VALUE


def test_entry_ids_round_trip_and_bad_ones_are_refused() -> None:
    """<partition>-<offset> parses back; anything else is a ValueError."""
    assert position(entry_id(12, 345678)) == (12, 345678)
    for bad in (b"12", b"a-1", b"1-b", b"-1", b"1--2"):
        with pytest.raises(ValueError, match="not a Kafka entry id"):
            position(bad)


@pytest.mark.parametrize(
    ("value", "headers", "data_field", "same", "equal"),
    [
        (b'{"a": 1}', [("type", b"t"), ("producer", b"p")], b"data", True, True),
        (b'{"a": 1}', [("type", b"t"), ("data", b"h")], b"data", True, True),  # stays a header
        (b'{"a": 1}', [], b"data", True, True),
        (b'{"a": 1}', [("type", b"t"), ("n", None)], b"data", False, False),  # becomes b""
        (None, [("type", b"t"), ("data", b"h")], b"data", False, False),  # header -> value
        (b'{"a": 1}', [("type", b"t")], b"synapse-body", False, True),  # careful, not needed
    ],
)
def test_a_record_whose_copies_reuse_its_headers_maps_to_exactly_them(
    value: bytes | None,
    headers: list[tuple[str, bytes | None]],
    data_field: bytes,
    same: bool,
    equal: bool,
) -> None:
    """read_entry says when the commit may produce a copy as the record's value and headers
    as read plus provenance (no round trip through fields): never when that differs from
    what to_record makes of the copy's fields."""
    entry, reuse = read_entry(3, 9, value, headers, data_field)
    assert entry == to_entry(3, 9, value, headers, data_field)
    assert reuse is same
    provenance = (b"src", entry[0], b"r")
    record = to_record(Write("a", entry[1], None, provenance).fields, b"k", data_field)
    reused = Record(value, with_provenance(headers, provenance), b"k")  # type: ignore[arg-type]
    assert (record == reused) is equal
