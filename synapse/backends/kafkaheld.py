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
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from synapse.backend import Batch
from synapse.kafka.records import to_entry
from synapse.plan import Entry

Partition = tuple[str, int]


@dataclass(slots=True)
class Held:
    """A record handed out and not yet fully acknowledged."""

    entry: Entry
    key: bytes | None
    deliveries: int
    due: float | None = None  # monotonic time of a retry_later, else None
    time_ms: int = 0  # the record's timestamp (CreateTime or LogAppendTime), ms


def held_of(msg: Message, data_field: bytes, deliveries: int, read_ms: int) -> Held:
    """The entry of a consumed record (``to_entry``), its key and timestamp (``read_ms``,
    when it was read, if it has none), handed out ``deliveries`` times."""
    partition, offset = msg.partition(), msg.offset()
    assert partition is not None and offset is not None
    # value and key: bytes or None (no deserializer); headers: bytes values as produced
    entry = to_entry(partition, offset, msg.value(), msg.headers(), data_field)  # type: ignore[arg-type]
    kind, stamp = msg.timestamp()
    return Held(
        entry, msg.key(), deliveries, time_ms=stamp if kind != TIMESTAMP_NOT_AVAILABLE else read_ms
    )


class HeldRecords:
    """Every held record by partition and offset, and each partition's commit point."""

    def __init__(self) -> None:
        self._held: dict[Partition, dict[int, Held]] = {}
        self._high: dict[Partition, int] = {}  # next offset after the last handed out
        self._committed: dict[Partition, int] = {}

    def clear(self) -> None:
        """Forget everything (a new consumer: another group)."""
        self._held.clear()
        self._high.clear()
        self._committed.clear()

    def forget(self, at: Partition) -> int:
        """Forget a partition the group took away: how many records it held."""
        self._high.pop(at, None)
        self._committed.pop(at, None)
        return len(self._held.pop(at, {}))

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

    def hold(self, at: Partition, offset: int, held: Held) -> None:
        rows = self._held.get(at)
        if rows is None:
            rows = self._held[at] = {}
        rows[offset] = held
        if offset >= self._high.get(at, 0):
            self._high[at] = offset + 1

    def get(self, at: Partition, offset: int) -> Held | None:
        return self._held.get(at, {}).get(offset)

    def release(self, at: Partition, offset: int) -> None:
        """Every copy acknowledged: the record no longer holds the commit point."""
        self._held.get(at, {}).pop(offset, None)

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
