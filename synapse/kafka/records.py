"""Kafka record <-> Synapse entry: the one mapping, both ways (docs/kafka.md "Mapping").

A record's value is the event body (JSON); its headers carry ``type`` and every
other field, in order, duplicates kept. As an entry (``plan.Entry``) a record is
``(b"<partition>-<offset>", fields)`` with its headers as fields, then the value
as the data field (``Limits.data_field``, ``data`` by default) last, so the
value wins over a header of that name when the event is parsed. A record with
no value (a tombstone) has no data field: its body is its fields, as on Redis.

A copy is written as ``events.copy_fields`` lays it out (one layout of a copy
for every backend): back to a record, the last data field is the value and the
other fields, provenance ``synapse-source``, ``synapse-id`` (``<partition>-
<offset>``) and ``synapse-route`` included, are headers in the same order. The
key is not a field: the backend keeps each record's key and hands it to every
copy and dead letter of that record (per-key order holds on the destination).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from synapse import keys
from synapse.events import Provenance
from synapse.plan import Entry

#: A record's headers as Kafka clients give them: (name, value or None) pairs.
Headers = Sequence[tuple[str, bytes | None]]

_SOURCE, _ID, _ROUTE = (name.decode() for name in (keys.F_SOURCE, keys.F_ID, keys.F_ROUTE))


class Record(NamedTuple):
    """What is produced: the value (None for no data field), the headers, the key."""

    value: bytes | None
    headers: list[tuple[str, bytes]]
    key: bytes | None


def entry_id(partition: int, offset: int) -> bytes:
    """The id of a record as an entry and in ``synapse-id``: ``<partition>-<offset>``."""
    return b"%d-%d" % (partition, offset)


def position(entry: bytes) -> tuple[int, int]:
    """(partition, offset) of an entry id made by ``entry_id``; ValueError otherwise."""
    partition, sep, offset = entry.partition(b"-")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise ValueError(f"{entry!r} is not a Kafka entry id (<partition>-<offset>)")
    return int(partition), int(offset)


#: Header names as field names, encoded once (a bounded cache: names come from producers).
_NAMES: dict[str, bytes] = {}
_NAMES_MAX = 1024


def field_name(name: str) -> bytes:
    """A header's name as an entry's field name (UTF-8, unpaired surrogates kept)."""
    raw = _NAMES.get(name)
    if raw is None:
        raw = name.encode("utf-8", "surrogateescape")
        if len(_NAMES) < _NAMES_MAX:
            _NAMES[name] = raw
    return raw


def to_entry(
    partition: int,
    offset: int,
    value: bytes | None,
    headers: Headers | None,
    data_field: bytes = b"data",
) -> Entry:
    """A consumed record as the entry the planner reads."""
    return read_entry(partition, offset, value, headers, data_field)[0]


def read_entry(
    partition: int, offset: int, value: bytes | None, headers: Headers | None, data_field: bytes
) -> tuple[Entry, bool]:
    """``to_entry`` of a record, and whether its copies may be produced with its headers as
    read plus provenance: what ``to_record`` makes of a copy's fields is exactly them.
    Not so for a tombstone (no value: a header would become the value), a header with no
    value (it becomes empty), or a data field named ``synapse-*`` (provenance's own). A
    header named as the data field stays a header either way."""
    fields: list[bytes] = []
    names = _NAMES
    same = value is not None and not data_field.startswith(b"synapse-")
    for name, raw in headers or ():
        if raw is None:
            raw, same = b"", False
        fields += (names.get(name) or field_name(name), raw)
    if value is not None:
        fields += (data_field, value)
    return (entry_id(partition, offset), fields), same


def to_record(fields: Sequence[bytes], key: bytes | None, data_field: bytes = b"data") -> Record:
    """A copy or dead letter (``Write.fields``) as the record to produce, with ``key``."""
    last = -1
    for i in range(len(fields) - 2, -1, -2):
        if fields[i] == data_field:
            last = i
            break
    headers = [
        (fields[i].decode("utf-8", "surrogateescape"), fields[i + 1])
        for i in range(0, len(fields) - 1, 2)
        if i != last
    ]
    value = fields[last + 1] if last >= 0 else None
    return Record(value, headers, key)


def with_provenance(headers: Headers, provenance: Provenance) -> list[tuple[str, bytes]]:
    """``headers`` and then the provenance headers, as ``events.copy_fields`` lays them out."""
    source, entry, route = provenance
    return [*headers, (_SOURCE, source), (_ID, entry), (_ROUTE, route)]  # type: ignore[list-item]
