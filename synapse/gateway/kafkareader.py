"""The gateway's reader on Kafka: one consumer by ``assign`` for every watched topic.

The shared read is one librdkafka consumer that never joins a group or commits:
each watched topic's partitions are added to its assignment (``incremental_assign``)
at the hub's positions, and removed when no client watches the topic. It polls in
slices of at most ``SLICE_MS`` (a consumer cannot be woken: a new topic is picked up
within one slice), taking what one poll finds and whatever is already fetched.

A second consumer (the control) answers joins (a topic's live end: each partition's
end offset), ``/streams``, and the health probe: metadata every ``PROBE_S`` while
reading, every block while idle. A broker that stops answering is an error of the
read (not ready, back off); librdkafka reconnects by itself and the read carries on
from its positions. A topic that does not exist yet joins with no partition; the
probe's metadata adds its partitions (and any added to a watched topic) from their
first record. Catch-ups are ``kafkacatchup.py``'s.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from synapse import log
from synapse.backends.kafkafailures import CONNECTION_CODES, BrokerWatch
from synapse.gateway.channel import Batches
from synapse.gateway.cursor import KAFKA, Codec, Position
from synapse.gateway.kafkacatchup import CatchUps
from synapse.gateway.kafkaworker import Worker, record_entry
from synapse.gateway.sse import Entry
from synapse.gateway.store import NotAStream
from synapse.kafka.names import topic_problem
from synapse.kafka.url import parse

logger = log.get("synapse.gateway")

#: The longest poll of the shared read (joins and stops wait at most this long).
SLICE_MS = 100
#: Metadata (health and new partitions) at least this often while reading.
PROBE_S = 2.0
#: How long one metadata or offsets request may take.
REQUEST_TIMEOUT_S = 5.0


class KafkaReader:
    """Kafka topics through one assigned consumer, a control consumer and a catch-up pool."""

    label = "Kafka"
    codec: Codec = KAFKA
    errors: tuple[type[BaseException], ...] = (KafkaException,)
    internal_prefixes: tuple[str, ...] = ("synapse.", "__")

    def __init__(self, url: str, *, block_ms: int, count: int) -> None:
        self.bootstrap = parse(url).bootstrap
        self.slice_s = min(block_ms, SLICE_MS) / 1000
        self.count = count
        self.watch = BrokerWatch(logger)
        self.live = Worker(self.bootstrap, "reader", self.watch)
        self.control = Worker(self.bootstrap, "control", self.watch)
        self.catchups = CatchUps(self.bootstrap, self.watch)
        self._assigned: dict[str, int] = {}  # topic -> partitions assigned (live thread)
        self._known: dict[str, int] = {}  # topic -> partitions, from the last metadata
        self._probed_at = 0.0
        self._reported: set[tuple[str, int]] = set()  # (topic, error code) logged

    # -- health and metadata -----------------------------------------------------------

    async def connect(self) -> None:
        await self._probe()

    async def ping(self) -> None:
        self.watch.raise_if_down()
        await self._probe()

    async def _probe(self) -> None:
        """Metadata of every topic: the broker answers, and how many partitions each has."""
        topics: dict[str, int] = await self.control.call(_topics, self.control.consumer)
        self._known = topics
        self._probed_at = time.monotonic()
        self.watch.answered()

    async def names(self, allows: Callable[[str], bool], limit: int) -> list[str]:
        await self._probe()
        return sorted(t for t in self._known if allows(t))[:limit]

    # -- joins and the shared read -----------------------------------------------------

    async def join(self, stream: str) -> Position:
        why = topic_problem(stream)
        if why:
            raise NotAStream(f"{stream!r} is not a Kafka topic: {why}")
        found: Position = await self.control.call(_live_end, self.control.consumer, stream)
        return found

    async def read(self, positions: Mapping[str, Position]) -> Batches:
        self.watch.raise_if_down()
        if time.monotonic() - self._probed_at > PROBE_S:
            await self._probe()
        found: Batches = await self.live.call(self._read, positions, self._known)
        return found

    def _read(self, positions: Mapping[str, Position], known: Mapping[str, int]) -> Batches:
        """(On the live thread.) Follow ``positions``, then one poll and what is fetched."""
        consumer = self.live.consumer
        self._follow(consumer, positions, known)
        first = consumer.poll(self.slice_s)
        if first is None:
            return []
        messages = [first, *consumer.consume(self.count - 1, 0)] if self.count > 1 else [first]
        out: dict[str, list[Entry]] = {}
        for msg in messages:
            topic = msg.topic() or ""
            err = msg.error()
            if err is not None:
                self._report(topic, err)
                continue
            out.setdefault(topic, []).append(record_entry(topic, msg))
        return list(out.items())

    def _follow(
        self, consumer: Consumer, positions: Mapping[str, Position], known: Mapping[str, int]
    ) -> None:
        """Make the assignment the watched topics' partitions: new ones at the position
        after the hub's (their first record when the hub has none), gone ones removed."""
        gone = [t for t in self._assigned if t not in positions]
        if gone:
            parts = [TopicPartition(t, p) for t in gone for p in range(self._assigned.pop(t))]
            if parts:
                consumer.incremental_unassign(parts)
        added: list[TopicPartition] = []
        for topic, pos in positions.items():
            have = self._assigned.get(topic)
            want = max(len(pos), known.get(topic, 0))
            if have is not None and want <= have:
                continue
            for p in range(have or 0, want):
                offset = pos[p] + 1 if p < len(pos) else OFFSET_BEGINNING
                added.append(TopicPartition(topic, p, offset))
            self._assigned[topic] = want
        if added:
            consumer.incremental_assign(added)

    def _report(self, topic: str, err: Any) -> None:
        """A partition's error: the broker's absence is the watch's and the probe's to
        report; anything else is logged once per topic and kind."""
        code = err.code()
        if code in CONNECTION_CODES or (topic, code) in self._reported:
            return
        self._reported.add((topic, code))
        logger.warning("kafka_read_error", topic=topic, error=err.str())

    async def wake(self) -> None:
        """Nothing to wake: a poll lasts one slice at most."""

    # -- catch-up ----------------------------------------------------------------------

    async def catch_up(
        self, stream: str, start: Position, end: Position, page: int
    ) -> AsyncGenerator[list[Entry], None]:
        """Every partition from after ``start`` to ``end`` (inclusive), a page at a time."""
        todo = {p: (start[p] + 1, last) for p, last in enumerate(end) if start[p] < last}
        while todo:
            entries, todo = await self.catchups.page(stream, todo, page)
            if entries:
                yield entries

    async def close(self) -> None:
        await self.live.close()
        await self.control.close()
        await self.catchups.close()


def _topics(consumer: Consumer) -> dict[str, int]:
    """{topic: partition count} of every topic the broker lists (listing all of them never
    creates one, as a request naming a topic might)."""
    meta = consumer.list_topics(timeout=REQUEST_TIMEOUT_S)
    return {name: len(t.partitions) for name, t in meta.topics.items() if t.error is None}


def _live_end(consumer: Consumer, topic: str) -> Position:
    """The last offset of each partition of ``topic`` (-1 when empty); none when the topic
    does not exist (yet)."""
    found = _topics(consumer).get(topic, 0)
    ends = []
    for p in range(found):
        _, high = consumer.get_watermark_offsets(
            TopicPartition(topic, p), timeout=REQUEST_TIMEOUT_S, cached=False
        )
        ends.append(int(high) - 1)
    return tuple(ends)
