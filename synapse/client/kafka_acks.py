"""Outcomes of handled records on Kafka: written through the router's Kafka commit.

A handler's outcome (acknowledge; dead-letter and acknowledge; mark and acknowledge)
is, on Kafka, exactly what ``KafkaBackend.commit`` does with a plan: produce the
writes (a dead letter, with the record's key) with ``acks=all``, wait for them,
release the records, then commit each partition's offset up to its first record
still held. So the flusher of ``acks.Acks`` writes each stream's outcomes as one
``BatchPlan`` (an acknowledged record: no writes; a dead letter: one write).

What is atomic here, and what is not: no transactions (tansu has none, and the
test broker is all this is tested on). A dead letter is produced and acknowledged
*before* the offset moves past its record, so it is never lost; a crash between
the two produces it again from the record's next delivery (at least once; the
dead letter carries ``synapse-source`` / ``synapse-id``). A dead letter the broker
refuses leaves its record held (``refused``, ``dead_letter_refused`` in the log):
the partition's commit waits there, and the record comes back at the next
rebalance or restart.

Dedupe marks (``dedupe_s``) are records of the service's marks topic
(``kafka_marks.py``), produced and acknowledged before the offset is committed.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException

from synapse.backoff import Backoff
from synapse.client.acks import Acks, Outcome
from synapse.client.kafka_marks import MarkLog
from synapse.plan import DEAD_LETTER, ROUTED, BatchPlan, EntryPlan, Write

if TYPE_CHECKING:
    from synapse.backends.kafka import KafkaBackend

#: Outcomes gather this long before one commit writes them (bench/kafkabus.py: fewer
#: offset commits, each a broker round trip on the consumer's thread, between reads).
LINGER_S = 0.01


class KafkaAcks(Acks):
    """``acks.Acks`` whose writes are the Kafka backend's commit."""

    failures = (KafkaException, ConnectionError, TimeoutError)
    linger_s = LINGER_S

    def __init__(
        self, backend: KafkaBackend, group: str, *, log: Any, backoff: Backoff, marks: MarkLog
    ) -> None:
        super().__init__(None, group, cluster=False, log=log, backoff=backoff)  # type: ignore[arg-type]
        self.backend = backend
        self.marks = marks

    async def write(self, plain: dict[str, list[bytes]], ops: list[Outcome]) -> None:
        """Each stream's outcomes as one plan committed by the backend."""
        marks = [op.mark for op in ops if op.mark is not None]
        if marks:
            await asyncio.to_thread(self.marks.write, marks)
        plans: dict[str, list[EntryPlan]] = {}
        for stream, ids in plain.items():
            plans.setdefault(stream, []).extend(EntryPlan(eid, ROUTED, ()) for eid in ids)
        for op in ops:
            if op.dead is not None:
                dlq, fields = op.dead
                entry = EntryPlan(op.entry_id, DEAD_LETTER, (Write(dlq, fields, None),))
            else:
                entry = EntryPlan(op.entry_id, ROUTED, ())
            plans.setdefault(op.stream, []).append(entry)
        for stream, entries in plans.items():
            result = await self.backend.commit(BatchPlan(stream, tuple(entries)), self.group)
            if result.failed:
                self.refused += len(result.failed)
                self.log.error(
                    "dead_letter_refused",
                    entries=len(result.failed),
                    stream=stream,
                    error=next(iter(result.failed.values())),
                )
