"""The Kafka backend's consumer of the group, on one worker thread of its own.

confluent-kafka's ``Consumer`` is not thread-safe: every call on it runs on one
worker thread, in order, awaited from the event loop. The group's rebalance callback
runs on that thread too, inside ``consume``: it only notes the partitions taken away,
for the event loop to forget (``take_revoked``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from synapse.backends.kafkaconfig import client_config
from synapse.backends.kafkafailures import CLIENT_LOG_LEVEL, BrokerWatch
from synapse.backends.kafkaheld import Partition
from synapse.config import RouterSettings


def consumer_config(
    bootstrap: str, client_id: str, settings: RouterSettings, watch: BrokerWatch
) -> dict[str, Any]:
    """The group consumer's settings: offsets committed by hand, librdkafka quiet."""
    return client_config(
        bootstrap,
        {
            "error_cb": watch,
            "log_level": CLIENT_LOG_LEVEL,
            "group.id": settings.group,
            "client.id": client_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": settings.start,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
            # a rebalance waits at most this long for members that do not rejoin (a router
            # killed with -9); the loop consumes at least every block_ms
            "max.poll.interval.ms": 15_000,
            "topic.metadata.refresh.interval.ms": 5000,
        },
    )


#: A rebalance callback: the consumer and the partitions it was given.
OnAssign = Callable[[Consumer, list[TopicPartition]], None]


class GroupConsumer:
    """One ``Consumer`` of one group at a time, driven on its own thread."""

    def __init__(self, bootstrap: str, client_id: str, watch: BrokerWatch) -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.watch = watch
        self.kafka: Consumer | None = None
        self.group: str | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="kafka-consumer")
        self._revoked: list[Partition] = []  # appended on the consumer thread

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def open(self, settings: RouterSettings) -> bool:
        """The consumer of ``settings.group`` (a new one when the group changed, the old
        one closed): whether it is new (nothing read, nothing subscribed)."""
        if self.kafka is not None and self.group == settings.group:
            return False
        await self.call(self._open, settings)
        return True

    def _open(self, settings: RouterSettings) -> None:
        if self.kafka is not None:
            self.kafka.close()
        self.kafka = Consumer(consumer_config(self.bootstrap, self.client_id, settings, self.watch))
        self.group = settings.group

    async def subscribe(self, topics: list[str], on_assign: OnAssign | None = None) -> None:
        """Subscribe the group to ``topics``; ``on_assign`` (on the consumer thread) may
        place each assigned partition (a service's per-topic start)."""
        kafka = self.kafka
        assert kafka is not None
        if on_assign is None:
            await self.call(lambda: kafka.subscribe(topics, on_revoke=self._revoked_cb))
        else:
            await self.call(
                lambda: kafka.subscribe(topics, on_assign=on_assign, on_revoke=self._revoked_cb)
            )

    def _revoked_cb(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._revoked.extend((tp.topic, tp.partition) for tp in partitions)

    def take_revoked(self) -> list[Partition]:
        """The partitions the group took away since the last call."""
        taken = []
        while self._revoked:
            taken.append(self._revoked.pop())
        return taken

    async def consume(self, n: int, timeout_s: float) -> list[Message]:
        assert self.kafka is not None
        found: list[Message] = await self.call(self.kafka.consume, n, timeout_s)
        return found

    async def seek(self, to: TopicPartition) -> None:
        assert self.kafka is not None
        await self.call(self.kafka.seek, to)

    async def commit(self, offsets: list[TopicPartition]) -> list[TopicPartition]:
        """Commit the ``offsets`` of partitions still assigned and wait for the coordinator's
        answer; the offsets committed. Decided on the consumer's thread just before the
        commit: a rebalance that ran in a consume since the offsets were worked out (a read
        ahead) gave the others away, and their new owner reads from their last committed
        offset; committing them now could move it back, or be refused mid-rebalance."""
        kafka = self.kafka
        assert kafka is not None

        def commit_assigned() -> list[TopicPartition]:
            mine = {(tp.topic, tp.partition) for tp in kafka.assignment()}
            kept = [tp for tp in offsets if (tp.topic, tp.partition) in mine]
            if kept:
                kafka.commit(offsets=kept, asynchronous=False)
            return kept

        committed: list[TopicPartition] = await self.call(commit_assigned)
        return committed

    def assigned(self) -> list[Partition]:
        """The partitions the group gave this consumer (empty before it joined)."""
        if self.kafka is None:
            return []
        return [(tp.topic, tp.partition) for tp in self.kafka.assignment()]

    async def close_consumer(self) -> None:
        """Leave the group (the next ``open`` makes a new consumer)."""
        if self.kafka is not None:
            with contextlib.suppress(Exception):
                await self.call(self.kafka.close)
            self.kafka = None
            self.group = None
        self._revoked.clear()

    async def close(self) -> None:
        """Leave the group; the thread ends once idle."""
        await self.close_consumer()
        self._thread.shutdown(wait=False)
