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
from synapse.gateway.cursor import KAFKA, Codec, IdKey, Position
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
        self._next: dict[tuple[str, int], int] = {}  # (topic, partition) -> offset expected
        self._restarted: list[tuple[str, IdKey]] = []
        self._checked_at = 0.0  # the last look at the partitions' ends (live thread)

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
        found: Batches
        found, self._restarted = await self.live.call(self._read, positions, self._known)
        return found

    def restarted(self) -> list[tuple[str, IdKey]]:
        return self._restarted

    def _read(
        self, positions: Mapping[str, Position], known: Mapping[str, int]
    ) -> tuple[Batches, list[tuple[str, IdKey]]]:
        """(On the live thread.) Follow ``positions``, then one poll and what is fetched;
        and the records behind the offset their partition was at (its log started again:
        the position the broker had was out of range, and it was read from its start)."""
        consumer = self.live.consumer
        self._follow(consumer, positions, known)
        if time.monotonic() - self._checked_at > PROBE_S:
            self._check_ends(consumer)
        first = consumer.poll(self.slice_s)
        if first is None:
            return [], []
        messages = [first, *consumer.consume(self.count - 1, 0)] if self.count > 1 else [first]
        out: dict[str, list[Entry]] = {}
        restarted: list[tuple[str, IdKey]] = []
        expected = self._next
        for msg in messages:
            topic = msg.topic() or ""
            err = msg.error()
            if err is not None:
                self._report(topic, err)
                continue
            e = record_entry(topic, msg)
            at = (topic, e.key[0])
            want = expected.get(at)
            if want is not None and e.key[1] < want:
                logger.warning("kafka_partition_restarted", topic=topic, partition=at[1],
                               offset=e.key[1], expected=want)  # fmt: skip
                restarted.append((topic, e.key))
            expected[at] = e.key[1] + 1
            out.setdefault(topic, []).append(e)
        return list(out.items()), restarted

    def _follow(
        self, consumer: Consumer, positions: Mapping[str, Position], known: Mapping[str, int]
    ) -> None:
        """Make the assignment the watched topics' partitions: new ones at the position
        after the hub's (their first record when the hub has none), gone ones removed."""
        gone = [t for t in self._assigned if t not in positions]
        if gone:
            parts = [TopicPartition(t, p) for t in gone for p in range(self._assigned.pop(t))]
            for tp in parts:
                self._next.pop((tp.topic, tp.partition), None)
            if parts:
                consumer.incremental_unassign(parts)
        added: list[TopicPartition] = []
        moved: list[TopicPartition] = []
        for topic, pos in positions.items():
            have = self._assigned.get(topic)
            want = max(len(pos), known.get(topic, 0))
            if have is not None:
                moved += self._moved(topic, pos, have)
            if have is not None and want <= have:
                continue
            for p in range(have or 0, want):
                offset = pos[p] + 1 if p < len(pos) else OFFSET_BEGINNING
                added.append(TopicPartition(topic, p, offset))
                if offset >= 0:
                    self._next[(topic, p)] = offset
            self._assigned[topic] = want
        if moved:  # assigned again where the hub stands (unassign, then assign)
            consumer.incremental_unassign([TopicPartition(t.topic, t.partition) for t in moved])
            added += moved
        if added:
            consumer.incremental_assign(added)

    def _moved(self, topic: str, pos: Position, have: int) -> list[TopicPartition]:
        """The partitions of an assigned topic whose hub position is not where this
        consumer stands: the topic was dropped and joined again before this consumer
        followed (its new position comes from the broker's end offsets, which tansu
        under-reports: left reading on, the consumer would skip what lies between)."""
        out = []
        for p, last in enumerate(pos[:have]):
            at = (topic, p)
            if at in self._next and self._next[at] != last + 1:
                out.append(TopicPartition(topic, p, last + 1))
                self._next[at] = last + 1
        return out

    def _check_ends(self, consumer: Consumer) -> None:
        """A partition whose end (the last fetch's high watermark, no request) is now
        below the offset it was read to started again (a topic made again, a broker that
        lost its data; some brokers, tansu among them, answer such a fetch with nothing
        rather than "out of range"): read it again from its first record."""
        self._checked_at = time.monotonic()
        for (topic, p), want in list(self._next.items()):
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
            if 0 <= high < want:
                try:
                    consumer.seek(TopicPartition(topic, p, OFFSET_BEGINNING))
                except KafkaException as exc:  # not fetching yet: looked at again next time
                    logger.debug("kafka_seek_failed", topic=topic, partition=p, error=str(exc))

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
