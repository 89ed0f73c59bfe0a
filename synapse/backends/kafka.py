"""The Kafka backend: topics, one consumer group, copies produced with ``acks=all``.

confluent-kafka (librdkafka) driven from asyncio: every consumer call runs on one
worker thread of its own (the consumer is not thread-safe; calls stay in order),
the producer's flush on another. The mapping record <-> entry is
``synapse/kafka/records.py``; what differs from Redis:

- reads: ``consume`` in slices of at most ``SLICE_S``, so a stop is seen within one
  slice; a record is handed out once and then *held* (with its key and delivery
  count) until every copy of it is acknowledged;
- the commit: every write produced (``to_record``, the source record's key kept),
  the producer flushed, then per partition the offset committed up to the first
  record still held (not fully acknowledged, refused, or waiting on
  ``retry_later``): a crash re-routes at most that uncommitted tail;
- own pending: the held records (this process's memory: after a restart the
  uncommitted tail is simply read again from the committed offset);
- reclaim: nothing to do per record: a dead router's partitions are reassigned by
  the consumer group, and their new owner reads from the committed offset;
- attempts across restarts for ``max_deliveries``: the head of each partition is
  counted in the ``synapse.attempts`` topic once per assignment
  (``kafkaattempts.py``); after a restart in the uncommitted tail, a careful
  stretch of one-record batches makes the record that kills a router the head.

Not a Redis server: no lease on the consumer name (the group's member id is the
client's), no service registry, no retention chore (topics' ``retention.ms``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from synapse import log as logging
from synapse.backend import Batch, CommitResult, Pages, Presence, Read
from synapse.backends import kafkaadmin as admin
from synapse.backends.kafkaattempts import Attempts, key_of
from synapse.backends.kafkaattempts import Table as AttemptsTable
from synapse.backends.kafkafailures import classify_kafka
from synapse.backends.kafkastats import GroupLag
from synapse.config import RouterSettings, RoutingTable
from synapse.errors import Failure
from synapse.kafka.records import Record, position, to_entry, to_records
from synapse.kafka.url import parse
from synapse.metrics import Metrics
from synapse.plan import BatchPlan, Entry
from synapse.registry import ServiceInfo

#: The longest a consume call blocks: a stop is seen within it.
SLICE_S = 0.1
#: After a restart in a partition's uncommitted tail, this many batches' worth of records
#: are handed out one at a time (the tail a router can hold: a batch and the one before,
#: whose commit may still have been in flight).
CAREFUL_BATCHES = 2
#: How long a broker may take to answer metadata at start before it counts as unreachable.
CONNECT_TIMEOUT_S = 5.0

Partition = tuple[str, int]


@dataclass(slots=True)
class Held:
    """A record handed out and not yet fully acknowledged."""

    entry: Entry
    key: bytes | None
    deliveries: int
    due: float | None = None  # monotonic time of a retry_later, else None
    time_ms: int = 0  # the record's timestamp (CreateTime or LogAppendTime)


class _Absent:
    """No service registry on Kafka yet: a presence that only waits to be stopped."""

    def __init__(self) -> None:
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        await self._stopped.wait()

    def stop(self) -> None:
        self._stopped.set()


class KafkaBackend:
    """Routes on Kafka topics (``kafka://host:port[,host:port]``)."""

    name = "kafka"

    def __init__(
        self,
        url: str,
        *,
        consumer: str,
        metrics: Metrics,
        stopping: asyncio.Event,
        log: logging.Logger,
        **_: Any,
    ) -> None:
        self.consumer = consumer
        self.metrics = metrics
        self.stopping = stopping
        self.log = log
        self.bootstrap = parse(url).bootstrap
        self.producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "client.id": consumer,
                "acks": "all",
                "enable.idempotence": False,  # tansu has no InitProducerId (docs/kafka.md)
                "linger.ms": 2,
                "message.timeout.ms": 30_000,
                "socket.connection.setup.timeout.ms": int(CONNECT_TIMEOUT_S * 1000),
            }
        )
        self._kafka: Consumer | None = None
        self._group: str | None = None
        self._data_field = b"data"
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="kafka-consumer")
        self._subscribed: list[str] = []
        self._held: dict[Partition, dict[int, Held]] = {}
        self._high: dict[Partition, int] = {}  # next offset after the last handed out
        self._committed: dict[Partition, int] = {}
        self._revoked: list[Partition] = []  # appended on the consumer thread
        self._attempts = Attempts(self.bootstrap, self.producer)
        self._lag = GroupLag(self.bootstrap, consumer)
        self._attempts_table: AttemptsTable | None = None  # read once per assignment
        self._seen: set[Partition] = set()  # partitions whose head was counted
        self._careful: dict[Partition, int] = {}  # one record per read below this offset

    # -- the consumer, on its own thread -----------------------------------------------------

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _open(self, settings: RouterSettings) -> Consumer:
        if self._kafka is None or self._group != settings.group:
            if self._kafka is not None:
                self._kafka.close()
            self._kafka = Consumer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": settings.group,
                    "client.id": self.consumer,
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": settings.start,
                    "session.timeout.ms": 6000,
                    "heartbeat.interval.ms": 1000,
                    # a rebalance waits at most this long for members that do not rejoin
                    # (a router killed with -9); the loop consumes at least every block_ms
                    "max.poll.interval.ms": 15_000,
                    "topic.metadata.refresh.interval.ms": 5000,
                }
            )
            self._group = settings.group
            self._subscribed = []
            self._held.clear()
            self._high.clear()
            self._committed.clear()
            self._seen.clear()
            self._careful.clear()
            self._attempts_table = None
        return self._kafka

    # -- the consumer name -------------------------------------------------------------------

    async def start(self, settings: RouterSettings) -> str | None:
        """Check a broker answers (metadata); open the group's consumer. No lease: the
        group's member id is the client's own."""
        self._data_field = settings.data_field.encode()
        await asyncio.to_thread(self.producer.list_topics, None, CONNECT_TIMEOUT_S)
        await self._call(self._open, settings)
        self.metrics.redis_up.set(1)
        return None

    def renew_s(self, settings: RouterSettings) -> float:
        return 30.0

    # -- sources -----------------------------------------------------------------------------

    async def discover(self, table: RoutingTable, *, create: bool) -> list[str]:
        """Topics of the table's names and globs (metadata, rescanned); missing named sources
        and destinations are created with ``create``; the consumer subscribes to the result."""
        if create:
            await asyncio.to_thread(admin.ensure_topics, self.bootstrap, admin.named_topics(table))
            await asyncio.to_thread(
                admin.ensure_topics,
                self.bootstrap,
                [self._attempts.topic],
                partitions=1,
                config={"cleanup.policy": "compact"},
            )
        found = await asyncio.to_thread(admin.matching_topics, self.bootstrap, table)
        if found != self._subscribed and found:
            kafka = await self._call(self._open, table.settings)
            await self._call(lambda: kafka.subscribe(found, on_revoke=self._revoked_cb))
            self._subscribed = found
            self.log.info("sources_subscribed", topics=found)
        return found

    async def refresh_stats(self, table: RoutingTable, sources: Sequence[str]) -> None:
        """Per source: ``synapse_source_pending`` = records held here (read, not committed);
        ``synapse_source_lag`` = end offsets minus the group's committed offsets
        (``kafkastats.py``; tansu's end offsets under-report: docs/kafka.md)."""
        held: dict[str, int] = dict.fromkeys(sources, 0)
        for (topic, _), rows in self._held.items():
            if topic in held:
                held[topic] += len(rows)
        for source, n in held.items():
            self.metrics.pending.labels(source).set(n)
        settings = table.settings
        lags = await asyncio.to_thread(
            self._lag.lag, settings.group, sources, earliest=settings.start == "earliest"
        )
        for source, n in lags.items():
            self.metrics.lag.labels(source).set(n)

    async def trim_by_age(
        self, table: RoutingTable, sources: Sequence[str], now_ms: int
    ) -> dict[str, int]:
        return {}  # topics keep their own retention.ms

    # -- reads -------------------------------------------------------------------------------

    def assigned(self) -> list[Partition]:
        """The partitions the group gave this consumer (empty before it joined)."""
        if self._kafka is None:
            return []
        return [(tp.topic, tp.partition) for tp in self._kafka.assignment()]

    async def read(
        self, settings: RouterSettings, sources: Sequence[str], block_ms: int
    ) -> Read | None:
        if self._kafka is None or not self._subscribed:
            await self._wait(block_ms / 1000)
            return None if self.stopping.is_set() else []
        deadline = time.monotonic() + block_ms / 1000
        while True:
            if self.stopping.is_set():
                return None
            left = deadline - time.monotonic()
            slice_s = max(0.0, min(SLICE_S, left))
            found: list[Message] = await self._call(self._kafka.consume, settings.batch, slice_s)
            self._forget_revoked()
            if found:
                return await self._hand_out(found, settings)
            if left <= 0:
                return []

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    def _revoked_cb(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """On the consumer thread, inside ``consume``: note what the group took away (the
        held records are forgotten on the event loop, ``_forget_revoked``)."""
        self._revoked.extend((tp.topic, tp.partition) for tp in partitions)

    def _forget_revoked(self) -> None:
        """Partitions the group gave to another member: their held records are its to read
        again from the committed offset; routing them here too would only duplicate."""
        while self._revoked:
            at = self._revoked.pop()
            dropped = len(self._held.pop(at, {}))
            self._high.pop(at, None)
            self._committed.pop(at, None)
            self._seen.discard(at)
            self._careful.pop(at, None)
            self._attempts_table = None  # another member may count there now: read again
            self.log.info("partition_revoked", topic=at[0], partition=at[1], held=dropped)

    async def _hand_out(self, messages: list[Message], settings: RouterSettings) -> Read:
        """Records as batches per topic, each held until committed. The first record of a
        partition since its assignment, and each record of a careful stretch, is counted
        in the attempts topic first (``_count``); in a careful stretch one record of the
        partition is handed out per read (the consumer rewound past it)."""
        by_topic: dict[str, list[Entry]] = {}
        times: dict[str, list[int]] = {}
        counted: dict[str, dict[bytes, int]] = {}
        cut: set[Partition] = set()
        read_ms = int(time.time() * 1000)  # a record without a timestamp: its read time
        held_of, high, data_field = self._held, self._high, self._data_field
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(error)
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None and partition is not None and offset is not None
            at = (topic, partition)
            if at in cut:
                continue  # read again after the one record of the careful stretch
            deliveries = 1
            if at not in self._seen or at in self._careful:
                deliveries = await self._count(at, offset, settings)
                self._seen.add(at)
                if at in self._careful:
                    cut.add(at)
                    await self._call(self._seek, TopicPartition(topic, partition, offset + 1))
            # value and key: bytes or None (no deserializer); headers: bytes values as produced
            entry = to_entry(partition, offset, msg.value(), msg.headers(), data_field)  # type: ignore[arg-type]
            kind, stamp = msg.timestamp()
            if kind == TIMESTAMP_NOT_AVAILABLE:
                stamp = read_ms
            rows = held_of.get(at)
            if rows is None:
                rows = held_of[at] = {}
            rows[offset] = Held(entry, msg.key(), deliveries, time_ms=stamp)
            if offset >= high.get(at, 0):
                high[at] = offset + 1
            by_topic.setdefault(topic, []).append(entry)
            times.setdefault(topic, []).append(stamp)
            if deliveries > 1:
                counted.setdefault(topic, {})[entry[0]] = deliveries
        return [
            Batch(topic, entries, counted.get(topic), times[topic])
            for topic, entries in by_topic.items()
        ]

    def _seek(self, to: TopicPartition) -> None:
        assert self._kafka is not None
        self._kafka.seek(to)

    async def _count(self, at: Partition, offset: int, settings: RouterSettings) -> int:
        """The delivery count of the head record ``offset`` of a partition, written to the
        attempts topic (acks=all) before it is routed: one more than stored if the stored
        head is this record (handed out before and never committed past), else 1. A count
        of 2 or more means a router went away in the uncommitted tail: the next
        ``CAREFUL_BATCHES`` batches' worth of records are handed out one at a time, each
        counted, so the record that kills a router becomes the head and reaches
        ``max_deliveries`` alone (innocent records before it are committed one by one)."""
        key = key_of(settings.group, at[0], at[1])
        if self._attempts_table is None:
            self._attempts_table = await asyncio.to_thread(self._attempts.load)
        prior = self._attempts_table.get(key)
        count = prior[1] + 1 if prior is not None and prior[0] == offset else 1
        await asyncio.to_thread(self._attempts.record, key, offset, count)
        self._attempts_table[key] = (offset, count)
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

    def read_ahead(
        self, settings: RouterSettings, sources: Sequence[str], previous: Read
    ) -> asyncio.Future[Read] | None:
        return None  # consume already fetches ahead (librdkafka's queue)

    # -- the commit --------------------------------------------------------------------------

    def commit(self, plan: BatchPlan, group: str) -> asyncio.Future[CommitResult]:
        return asyncio.ensure_future(self._commit(plan))

    async def _commit(self, plan: BatchPlan) -> CommitResult:
        errors: dict[bytes, dict[str, str]] = {}
        done: list[tuple[dict[int, Held], int, bytes]] = []  # (its partition's held, offset, id)
        skipped: set[bytes] = set()
        for each in plan.entries:
            partition, offset = position(each.entry_id)
            rows = self._held.get((plan.source, partition))
            held = rows.get(offset) if rows is not None else None
            if rows is None or held is None:
                skipped.add(each.entry_id)  # committed already, or its partition was revoked
                continue
            done.append((rows, offset, each.entry_id))
            records = to_records(each.writes, held.key, self._data_field)
            self._produce(records, each.entry_id, errors)
        await asyncio.to_thread(self.producer.flush)
        failed = {eid: next(iter(errors[eid].values())) for eid in errors}
        for rows, offset, eid in done:
            if eid not in failed:
                rows.pop(offset, None)
        await self._commit_offsets()
        return CommitResult(failed=failed, skipped=frozenset(skipped), refused=errors)

    def _produce(
        self, records: list[tuple[str, Record]], eid: bytes, errors: dict[bytes, dict[str, str]]
    ) -> None:
        """Produce every write of entry ``eid``; a refusal is noted in ``errors`` per topic
        (one delivery callback per entry: the topic comes with the message)."""

        def acknowledged(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                errors.setdefault(eid, {})[msg.topic() or "?"] = str(err)

        produce = self.producer.produce
        for topic, record in records:
            while True:
                try:
                    produce(
                        topic,
                        value=record.value,
                        key=record.key,
                        headers=record.headers,  # type: ignore[arg-type]  # the stub's list is invariant
                        on_delivery=acknowledged,
                    )
                    break
                except BufferError:  # the local queue is full: let acknowledgements drain it
                    self.producer.poll(0.05)
                except KafkaException as exc:  # refused before sending (too large, bad topic)
                    errors.setdefault(eid, {})[topic] = str(exc.args[0])
                    break

    async def _commit_offsets(self) -> None:
        """Per partition: commit up to the first record still held."""
        offsets = []
        for at, high in self._high.items():
            held = self._held.get(at)
            point = min(held) if held else high
            if self._committed.get(at, -1) < point:
                offsets.append(TopicPartition(at[0], at[1], point))
        if offsets and self._kafka is not None:
            await self._call(self._commit_sync, offsets)
            for tp in offsets:
                self._committed[(tp.topic, tp.partition)] = tp.offset

    def _commit_sync(self, offsets: list[TopicPartition]) -> None:
        assert self._kafka is not None
        self._kafka.commit(offsets=offsets, asynchronous=False)

    # -- held records ------------------------------------------------------------------------

    async def own_pending(
        self, settings: RouterSettings, sources: Sequence[str], *, counted: bool
    ) -> Pages:
        for batch in self._held_batches(sources, counted=counted, due_only=False):
            yield batch

    async def reclaim(self, settings: RouterSettings, sources: Sequence[str]) -> Pages:
        """Nothing per record: the group reassigns a dead router's partitions."""
        return
        yield  # pragma: no cover - an async generator that yields nothing

    def retry_later(self, source: str, entry_id: bytes, delay_s: float) -> None:
        partition, offset = position(entry_id)
        held = self._held.get((source, partition), {}).get(offset)
        if held is not None:
            held.due = time.monotonic() + delay_s

    def next_retry_s(self) -> float | None:
        dues = [h.due for rows in self._held.values() for h in rows.values() if h.due is not None]
        return max(0.0, min(dues) - time.monotonic()) if dues else None

    async def retries_due(self, settings: RouterSettings) -> Pages:
        sources = sorted({topic for topic, _ in self._held})
        for batch in self._held_batches(sources, counted=True, due_only=True):
            yield batch

    def _held_batches(
        self, sources: Sequence[str], *, counted: bool, due_only: bool
    ) -> list[Batch]:
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

    # -- the rest of the protocol ------------------------------------------------------------

    async def housekeep(self, settings: RouterSettings, sources: Sequence[str]) -> None:
        """The group forgets its members itself."""

    def housekeep_s(self) -> float:
        return 60.0

    def classify(self, exc: BaseException) -> Failure:
        return classify_kafka(exc)

    def presence(self, info: Callable[[], ServiceInfo]) -> Presence:
        return _Absent()

    async def reconfigure(self, old: RouterSettings, new: RouterSettings) -> None:
        """Nothing: each read takes its BLOCK time as a deadline."""

    async def interrupt(self) -> None:
        """Nothing in flight between turns (each consume call is one short slice)."""

    async def farewell(self, settings: RouterSettings, sources: Sequence[str]) -> None:
        """Commit what is acknowledged and leave the group (its partitions move at once)."""
        with contextlib.suppress(Exception):
            await self._commit_offsets()

    async def close(self) -> None:
        if self._kafka is not None:
            with contextlib.suppress(Exception):
                await self._call(self._kafka.close)
            self._kafka = None
        await asyncio.to_thread(self.producer.flush, 5.0)
        await asyncio.to_thread(self._lag.close)
        self._thread.shutdown(wait=False)
