"""Catch-up on Kafka: what a resuming client missed, read by a small pool of consumers.

However many clients resume at once, at most ``READERS`` consumers read for them
(callers queue, as on Redis for the control pool). A consumer is held for one page
only: each page assigns the partitions still to read at their next offsets, reads
until ``page`` records or every partition reached its end (inclusive), and
unassigns, so a slow client's socket never holds a reader. A partition whose
records before the cursor are no longer retained starts at its first record
(``auto.offset.reset=earliest``): nothing still retained is missed.
"""

from __future__ import annotations

import asyncio
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from synapse.backends.kafkafailures import BrokerWatch
from synapse.gateway.kafkaworker import Worker, record_entry
from synapse.gateway.sse import Entry

#: Consumers reading catch-ups at most.
READERS = 2
#: How long a page may go with no record before it is an error (the client reconnects).
STALL_S = 10.0

#: {partition: (next offset to read, last offset wanted)}
Todo = dict[int, tuple[int, int]]


class CatchUps:
    """The pool: consumers made when first needed, at most ``size``."""

    def __init__(self, bootstrap: str, watch: BrokerWatch, size: int = READERS) -> None:
        self.bootstrap = bootstrap
        self.watch = watch
        self._free: list[Worker] = []
        self._all: list[Worker] = []
        self._slots = asyncio.Semaphore(size)

    async def page(self, topic: str, todo: Todo, size: int) -> tuple[list[Entry], Todo]:
        """Up to ``size`` records of ``todo``; and what is left to read."""
        async with self._slots:
            if self._free:
                worker = self._free.pop()
            else:
                worker = Worker(self.bootstrap, f"catchup-{len(self._all)}", self.watch, eof=True)
                self._all.append(worker)
            try:
                found: tuple[list[Entry], Todo] = await worker.call(
                    read_page, worker.consumer, topic, todo, size
                )
                return found
            finally:
                self._free.append(worker)

    async def close(self) -> None:
        for worker in self._all:
            await worker.close()
        self._all, self._free = [], []


def read_page(consumer: Consumer, topic: str, todo: Todo, size: int) -> tuple[list[Entry], Todo]:
    """(On the worker's thread.) Records of ``todo``'s partitions in fetch order, each
    partition in its order, until ``size`` of them or every partition is done."""
    left = dict(todo)
    consumer.assign([TopicPartition(topic, p, nxt) for p, (nxt, _) in left.items()])
    out: list[Entry] = []
    heard = time.monotonic()
    try:
        while left and len(out) < size:
            batch = consumer.consume(min(size - len(out), 500), 0.2)
            if batch:
                heard = time.monotonic()
            elif time.monotonic() - heard > STALL_S:
                why = f"catching up on {topic} stalled for {STALL_S:.0f} s"
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, why))
            for msg in batch:
                p = msg.partition() or 0
                if p not in left:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        del left[p]  # nothing more there (the rest is no longer retained)
                        continue
                    raise KafkaException(err)
                offset, last = msg.offset() or 0, left[p][1]
                if offset > last:
                    del left[p]
                    continue
                out.append(record_entry(topic, msg))
                if offset >= last:
                    del left[p]
                else:
                    left[p] = (offset + 1, last)
    finally:
        consumer.unassign()
    return out, left
