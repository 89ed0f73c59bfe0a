"""The Kafka backend's hand-out: consumed records as the batches the router plans.

Each record becomes its entry (``records.read_entry``) and is *held*
(``kafkaheld.py``) until every copy of it is acknowledged. The first record of a
partition since its assignment, and each record of a careful stretch, is counted in
the attempts topic before it is handed out (``kafkahead.py``). One pass per read,
per record on the hot path. On a backlog one read may run ahead (``Ahead``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from synapse import log as logging
from synapse.backend import Batch, Read
from synapse.backends.kafkaconsumer import GroupConsumer
from synapse.backends.kafkahead import HeadCounter
from synapse.backends.kafkaheld import HeldRecords, Partition, held_of
from synapse.config import RouterSettings
from synapse.plan import Entry


async def hand_out(
    messages: list[Message],
    settings: RouterSettings,
    records: HeldRecords,
    heads: HeadCounter,
    group: GroupConsumer,
    data_field: bytes,
) -> Read:
    """Records as batches per topic, each held until committed. The first record of a
    partition since its assignment, and each record of a careful stretch, is counted
    in the attempts topic first (``kafkahead.py``); in a careful stretch one record of
    the partition is handed out per read (the consumer rewound past it). An error for
    a partition is raised once every record of the fetch is held."""
    by_topic: dict[str, list[Entry]] = {}
    times: dict[str, list[int]] = {}
    counted: dict[str, dict[bytes, int]] = {}
    cut: set[Partition] = set()
    failed: KafkaError | None = None
    read_ms = int(time.time() * 1000)  # a record without a timestamp: its read time
    hold = records.hold
    plain: set[Partition] = set()  # not counted first: stays so for the whole read
    for msg in messages:
        error = msg.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                failed = failed or error
            continue
        held = held_of(msg, data_field, 1, read_ms)
        at = held.at
        if at not in plain and heads.counts(at):  # a head, or careful (kafkahead.py)
            if at in cut:
                continue  # read again after the one record of the careful stretch
            held.deliveries = await heads.count(at, held.offset, settings)
            if heads.careful(at):
                cut.add(at)
                await group.seek(TopicPartition(at[0], at[1], held.offset + 1))
            if held.deliveries > 1:
                counted.setdefault(at[0], {})[held.entry[0]] = held.deliveries
        else:
            plain.add(at)
        hold(held)
        entries = by_topic.get(at[0])
        if entries is None:
            entries = by_topic[at[0]] = []
            times[at[0]] = []
        entries.append(held.entry)
        times[at[0]].append(held.time_ms)
    if failed is not None:  # raised once every record is held: own_pending routes them
        raise KafkaException(failed)
    return [
        Batch(topic, entries, counted.get(topic), times[topic])
        for topic, entries in by_topic.items()
    ]


class Ahead:
    """The one read ahead a backend may have running. The pipeline gets it shielded: once
    its consume returned, its records are held even if the pipeline drops the read; the
    backend's next read, ``own_pending`` and ``interrupt`` wait for it first (``settle``),
    so its records are never routed past nor read by two reads at once."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self._task: asyncio.Future[Read] | None = None

    def start(self, read: Callable[[], Awaitable[Read]]) -> asyncio.Future[Read] | None:
        """Run ``read`` ahead, unless one still runs."""
        if self._task is not None and not self._task.done():
            return None
        self._task = asyncio.ensure_future(read())
        return asyncio.shield(self._task)

    async def settle(self) -> None:
        """Wait for a read ahead still running. Its records are held whatever it raised;
        its error, when the pipeline dropped it, is logged (its cause is the next read's)."""
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await task
        except Exception as exc:  # held already: own pending routes the records
            self.log.info("read_ahead_failed", error=str(exc))
