"""The Kafka backend's held records and commit points: bookkeeping only, no client.

A record handed out is *held* (its entry, key, delivery count, and the due time of a
``retry_later``) until every copy of it is acknowledged. Per partition the commit
point is the first record still held, else the offset after the last one handed out;
a partition is committed again only when its point moved past what was committed.
A partition the group took away is forgotten (its new owner reads it again from the
committed offset).
"""

from __future__ import annotations

import time
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from synapse.backend import Batch
from synapse.kafka.records import Headers, read_entry
from synapse.plan import Entry

Partition = tuple[str, int]


@dataclass(slots=True)
class Held:
    """A record handed out and not yet fully acknowledged."""

    entry: Entry
    key: bytes | None
    deliveries: int
    at: Partition
    offset: int
    time_ms: int  # the record's timestamp (CreateTime or LogAppendTime), ms
    value: bytes | None  # the record's value as read
    #: The record's headers as read when its copies may reuse them (``records.read_entry``),
    #: else None: the commit then builds the copies from the entry's fields.
    headers: Headers | None
    due: float | None = None  # monotonic time of a retry_later, else None


def held_of(msg: Message, data_field: bytes, deliveries: int, read_ms: int) -> Held:
    """The entry of a consumed record (``to_entry``), its key and timestamp (``read_ms``,
    when it was read, if it has none), handed out ``deliveries`` times."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    # value and key: bytes or None (no deserializer); headers: bytes values as produced
    value: bytes | None = msg.value()
    headers: Headers | None = msg.headers()  # type: ignore[assignment]
    kind, stamp = msg.timestamp()
    entry, same = read_entry(partition, offset, value, headers, data_field)
    return Held(
        entry,
        msg.key(),
        deliveries,
        (topic, partition),
        offset,
        stamp if kind != TIMESTAMP_NOT_AVAILABLE else read_ms,
        value,
        (headers or []) if same else None,
    )


class HeldRecords:
    """Every held record by partition and offset, and each partition's commit point."""

    def __init__(self) -> None:
        self._held: dict[Partition, dict[int, Held]] = {}
        self._ids: dict[str, dict[bytes, Held]] = {}  # the same records per topic, by entry id
        self._high: dict[Partition, int] = {}  # next offset after the last handed out
        self._committed: dict[Partition, int] = {}

    def clear(self) -> None:
        """Forget everything (a new consumer: another group)."""
        self._held.clear()
        self._ids.clear()
        self._high.clear()
        self._committed.clear()

    def forget(self, at: Partition) -> int:
        """Forget a partition the group took away: how many records it held."""
        self._high.pop(at, None)
        self._committed.pop(at, None)
        rows = self._held.pop(at, {})
        ids = self._ids.get(at[0], {})
        for held in rows.values():
            ids.pop(held.entry[0], None)
        return len(rows)

    def copy_as_fields(self) -> None:
        """Every held record's copies built from its entry's fields from now on, not from
        its headers as read (the data field's name changed since they were read)."""
        for rows in self._held.values():
            for held in rows.values():
                held.headers = None

    def count(self) -> int:
        """How many records are held."""
        return sum(len(rows) for rows in self._held.values())

    def per_topic(self, topics: Sequence[str]) -> dict[str, int]:
        """How many records of each of ``topics`` are held."""
        counts = dict.fromkeys(topics, 0)
        for (topic, _), rows in self._held.items():
            if topic in counts:
                counts[topic] += len(rows)
        return counts

    def hold(self, held: Held) -> None:
        at, offset = held.at, held.offset
        rows = self._held.get(at)
        if rows is None:
            rows = self._held[at] = {}
        rows[offset] = held
        ids = self._ids.get(at[0])
        if ids is None:
            ids = self._ids[at[0]] = {}
        ids[held.entry[0]] = held
        if offset >= self._high.get(at, 0):
            self._high[at] = offset + 1

    def get(self, at: Partition, offset: int) -> Held | None:
        return self._held.get(at, {}).get(offset)

    def of_topic(self, topic: str) -> Mapping[bytes, Held]:
        """The held records of ``topic`` by entry id (``<partition>-<offset>``), live."""
        return self._ids.get(topic) or {}

    def release_all(self, records: Iterable[Held], but: Container[bytes]) -> None:
        """Every copy acknowledged of each of ``records`` but those whose entry id is in
        ``but``: they no longer hold their partition's commit point."""
        held, ids = self._held, self._ids
        for record in records:
            eid = record.entry[0]
            if eid in but:
                continue
            rows = held.get(record.at)
            if rows is not None and rows.get(record.offset) is record:
                del rows[record.offset]
                ids[record.at[0]].pop(eid, None)

    def moved(self) -> list[tuple[Partition, int]]:
        """Partitions whose commit point moved past the last commit, with the point."""
        points = []
        for at, high in self._high.items():
            held = self._held.get(at)
            point = min(held) if held else high
            if self._committed.get(at, -1) < point:
                points.append((at, point))
        return points

    def committed(self, at: Partition, point: int) -> None:
        self._committed[at] = point

    def retry_later(self, at: Partition, offset: int, delay_s: float) -> None:
        held = self.get(at, offset)
        if held is not None:
            held.due = time.monotonic() + delay_s

    def next_retry_s(self) -> float | None:
        dues = [h.due for rows in self._held.values() for h in rows.values() if h.due is not None]
        return max(0.0, min(dues) - time.monotonic()) if dues else None

    def sources(self) -> list[str]:
        """The topics with a held record."""
        return sorted({topic for topic, _ in self._held})

    def batches(self, sources: Sequence[str], *, counted: bool, due_only: bool) -> list[Batch]:
        """The held records of ``sources`` (only those due for a retry with ``due_only``),
        one batch per topic in offset order; ``counted`` adds a delivery to each."""
        now = time.monotonic()
        batches = []
        for source in sources:
            entries: list[Entry] = []
            times: list[int] = []
            deliveries: dict[bytes, int] = {}
            for (topic, _), rows in sorted(self._held.items()):
                if topic != source:
                    continue
                for _offset, held in sorted(rows.items()):
                    if due_only and (held.due is None or held.due > now):
                        continue
                    if counted:
                        held.deliveries += 1
                    held.due = None
                    entries.append(held.entry)
                    times.append(held.time_ms)
                    deliveries[held.entry[0]] = held.deliveries
            if entries:
                batches.append(Batch(source, entries, deliveries, times))
        return batches
