"""Head counting: the delivery count of a partition's first record after an assignment,
kept across restarts in the attempts topic (``kafkaattempts.py``) for ``max_deliveries``.

When a partition is assigned, its first record (the one at the committed offset) is
counted before it is routed: one more than the stored count if the stored record is
that same offset (handed out before and never committed past), else 1. A count of 2
or more means a router went away in the uncommitted tail: the next ``CAREFUL_BATCHES``
batches' worth of records are handed out one at a time, each counted as a head, so the
record that kills a router becomes the head and reaches ``max_deliveries`` alone (the
innocent records before it are committed one by one). Nothing is written on the hot
path: only heads and the careful stretch.
"""

from __future__ import annotations

import asyncio

from synapse import log as logging
from synapse.backends.kafkaattempts import Attempts, Table, key_of
from synapse.backends.kafkaheld import Partition
from synapse.config import RouterSettings

#: After a restart in a partition's uncommitted tail, this many batches' worth of records
#: are handed out one at a time (the tail a router can hold: a batch and the one before,
#: whose commit may still have been in flight).
CAREFUL_BATCHES = 2


class HeadCounter:
    """Which records are counted in the attempts topic before they are routed, and how."""

    def __init__(self, attempts: Attempts, log: logging.Logger) -> None:
        self.attempts = attempts
        self.log = log
        self._table: Table | None = None  # read once per assignment
        self._seen: set[Partition] = set()  # partitions whose head was counted
        self._careful: dict[Partition, int] = {}  # one record per read below this offset

    def clear(self) -> None:
        """Forget everything (a new consumer)."""
        self._seen.clear()
        self._careful.clear()
        self._table = None

    def forget(self, at: Partition) -> None:
        """A partition the group took away: another member may count there now."""
        self._seen.discard(at)
        self._careful.pop(at, None)
        self._table = None  # read again

    def counts(self, at: Partition) -> bool:
        """Whether the next record of ``at`` is counted first (a head, or careful)."""
        return at not in self._seen or at in self._careful

    def careful(self, at: Partition) -> bool:
        """Whether ``at`` hands out one record per read."""
        return at in self._careful

    async def count(self, at: Partition, offset: int, settings: RouterSettings) -> int:
        """The delivery count of record ``offset`` of ``at``, written to the attempts topic
        (acks=all) before it is routed; a count of 2 or more starts a careful stretch."""
        key = key_of(settings.group, at[0], at[1])
        if self._table is None:
            self._table = await asyncio.to_thread(self.attempts.load)
        prior = self._table.get(key)
        count = prior[1] + 1 if prior is not None and prior[0] == offset else 1
        await asyncio.to_thread(self.attempts.record, key, offset, count)
        self._table[key] = (offset, count)
        self._seen.add(at)
        if count >= 2 and at not in self._careful:
            self._careful[at] = offset + CAREFUL_BATCHES * settings.batch
            self.log.warning(
                "redelivered_after_restart",
                topic=at[0],
                partition=at[1],
                offset=offset,
                deliveries=count,
                careful_until=self._careful[at],
            )
        elif at in self._careful and offset >= self._careful[at]:
            del self._careful[at]
        return count
