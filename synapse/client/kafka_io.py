"""The subscriber's I/O on Kafka: the router's Kafka backend, for one service's group.

``KafkaStreams`` is the Kafka side of ``seam.StreamsIO``. It drives the router's
``backends.kafka.KafkaBackend`` (``ServiceConsumer`` only adds how a service
subscribes): the consumer group is the service name, so the group spreads the
topics' partitions over the service's instances and a dead instance's partitions
go to the others at the rebalance (that is the claim: nothing per record); reads
are ``consume`` slices on the consumer's own thread; a record read is *held* until
its outcome is written, and offsets are committed per partition up to the first
record still held (a handler running, a retry waiting, a refused dead letter); the
delivery count of a partition's head record survives restarts in
``synapse.attempts`` (``kafkaattempts.py``, the router's), with the router's
careful stretch after a crash in the uncommitted tail. A handler's retry is the
held record handed back, counted in memory (``again``).

Per topic start: a partition the group has no committed offset for starts at the
beginning for ``start="earliest"`` topics and the service's retry topic, at the end
for ``"latest"`` ones (``on_assign``: the end offset asked then, so a record
produced after the assignment is never skipped; on tansu, whose end offsets
under-report after batched produce, a few older records can be read too).
``setup`` waits (up to ``JOIN_TIMEOUT_S``) for the group's first assignment, so a
subscriber is ready once it holds its partitions; records read meanwhile are
handed out first.

Outcomes are written by ``kafka_acks.KafkaAcks`` through the backend's commit;
dedupe marks live in the service's marks topic (``kafka_marks.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition

from synapse.backend import Pages, Read
from synapse.backends import kafkaadmin as admin
from synapse.backends.kafka import KafkaBackend
from synapse.backoff import Backoff
from synapse.client.kafka_acks import KafkaAcks
from synapse.client.kafka_marks import MarkLog
from synapse.config import RouterSettings
from synapse.errors import Failure
from synapse.kafka.records import position
from synapse.metrics import Metrics
from synapse.plan import Entry

#: How long ``setup`` waits for the group's first assignment.
JOIN_TIMEOUT_S = 30.0
#: How long asking the group's committed offsets may take at an assignment.
COMMITTED_TIMEOUT_S = 10.0


class ServiceConsumer(KafkaBackend):
    """The router's Kafka backend, subscribing a service's topics each with its start."""

    def __init__(self, url: str, *, starts: dict[str, str], **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.starts = starts
        self.assignments = 0  # rebalances that gave this consumer its partitions

    async def join(self, settings: RouterSettings) -> None:
        """Create the topics (theirs, the dead-letter topic, the attempts topic) and
        subscribe the group to them."""
        topics = list(self.starts)
        await asyncio.to_thread(
            admin.ensure_topics, self.bootstrap, [*topics, settings.dead_letter]
        )
        await asyncio.to_thread(
            admin.ensure_topics,
            self.bootstrap,
            [self._attempts.topic],
            partitions=1,
            config={"cleanup.policy": "compact"},
        )
        await self._open(settings)
        if self._subscribed != topics:
            await self._group.subscribe(topics, on_assign=self._on_assign)
            self._subscribed = topics

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """On the consumer thread: start each partition at the group's committed offset,
        else at its topic's start."""
        try:
            placed = consumer.committed(partitions, timeout=COMMITTED_TIMEOUT_S)
        except KafkaException:
            placed = partitions  # the consumer's auto.offset.reset decides
        for tp in placed:
            if tp.offset < 0:
                start = self.starts.get(tp.topic or "", "latest")
                tp.offset = OFFSET_BEGINNING if start == "earliest" else self._end(consumer, tp)
        consumer.assign(placed)
        self.assignments += 1

    @staticmethod
    def _end(consumer: Consumer, tp: TopicPartition) -> int:
        """The partition's end now (so a record produced after the assignment is read,
        however late the fetch starts); the end as the fetch finds it if unknown."""
        try:
            _, high = consumer.get_watermark_offsets(
                TopicPartition(tp.topic or "", tp.partition), timeout=COMMITTED_TIMEOUT_S
            )
        except KafkaException:
            return int(OFFSET_END)
        return int(high) if high >= 0 else int(OFFSET_END)

    def again(self, topic: str, entry_id: bytes) -> tuple[Entry | None, int]:
        """A held record handed back for a handler's retry, its delivery count one more;
        (None, 0) when it is no longer held (its outcome written, or its partition moved)."""
        partition, offset = position(entry_id)
        held = self._held.get((topic, partition), offset)
        if held is None:
            return None, 0
        held.deliveries += 1
        return held.entry, held.deliveries


class KafkaStreams:
    """One consumer of the service's group on its topics (``seam.StreamsIO``)."""

    def __init__(
        self,
        url: str,
        *,
        settings: RouterSettings,
        starts: dict[str, str],
        stopping: asyncio.Event,
        log: Any,
        backoff: Backoff,
    ) -> None:
        self.settings = settings
        self.starts = starts
        self.streams = list(starts)
        self.stopping = stopping
        self.log = log
        self.backend = ServiceConsumer(
            url,
            starts=starts,
            consumer=settings.consumer or "",
            metrics=Metrics(),
            stopping=stopping,
            log=log,
        )
        self.marks = MarkLog(self.backend.bootstrap, self.backend.producer, settings.group)
        self._acks = KafkaAcks(
            self.backend, settings.group, log=log, backoff=backoff, marks=self.marks
        )
        self._early: Read = []

    @property
    def acks(self) -> KafkaAcks:
        return self._acks

    async def setup(self) -> None:
        """Check the broker answers, join the group; the first time, wait for its
        partitions (records read meanwhile are handed out by the next ``read``)."""
        await self.backend.start(dataclasses.replace(self.settings, start="earliest"))
        await self.backend.join(self.settings)
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while self.backend.assignments == 0 and not self.stopping.is_set():
            if time.monotonic() > deadline:
                raise KafkaException(f"no partitions assigned within {JOIN_TIMEOUT_S}s")
            self._early += await self.backend.read(self.settings, self.streams, 100) or []

    async def own_pending(self) -> Pages:
        """Nothing: held records are this process's, and after a restart the uncommitted
        tail is read again from the committed offset."""
        return
        yield  # pragma: no cover - an async generator that yields nothing

    async def read(self) -> Read | None:
        """Records read at set-up first, else one read of up to ``block_ms``."""
        if self._early:
            early, self._early = self._early, []
            return early
        return await self.backend.read(self.settings, self.streams, self.settings.block_ms)

    def read_ahead(self, previous: Read) -> asyncio.Future[Read] | None:
        return None  # librdkafka fetches ahead by itself

    def reclaim(self) -> Pages:
        """Nothing per record: the group hands a dead instance's partitions over."""
        return self.backend.reclaim(self.settings, self.streams)

    def classify(self, exc: BaseException) -> Failure:
        return self.backend.classify(exc)

    async def claim_again(self, stream: str, entry_id: bytes) -> tuple[Entry | None, int]:
        return self.backend.again(stream, entry_id)

    async def keep(self, stream: str, ids: Sequence[bytes], min_idle_ms: int) -> None:
        """Nothing: a held record stays this instance's until its partition moves."""

    async def marked(self, keys: Sequence[str]) -> list[bool]:
        """Which dedupe marks exist (``kafka_marks.py``). A broker error here marks
        nothing (the handlers run: at least once) rather than leave the batch unhandled."""
        if not keys:
            return []
        try:
            return await asyncio.to_thread(self.marks.marked, keys)
        except KafkaException as exc:
            self.log.warning("dedupe_marks_unavailable", error=str(exc), entries=len(keys))
            return [False] * len(keys)

    async def forget_idle(self) -> None:
        """Nothing: the group forgets departed members by itself."""

    async def farewell(self) -> None:
        """Commit what has an outcome (closing then leaves the group)."""
        await self.backend.farewell(self.settings, self.streams)

    async def close(self) -> None:
        await self.backend.close()
        await asyncio.to_thread(self.marks.close)
