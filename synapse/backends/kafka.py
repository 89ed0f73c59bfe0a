"""The Kafka backend: topics, one consumer group, copies produced with ``acks=all``.

confluent-kafka (librdkafka) driven from asyncio. The mapping record <-> entry is
``synapse/kafka/records.py``; the parts, one module each:

- the group's consumer on a worker thread of its own (``kafkaconsumer.py``): reads
  ``consume`` in slices of at most ``SLICE_S``, so a stop is seen within one slice;
- the hand-out (``kafkahandout.py``): each consumed record as its entry, batched per
  topic; on a backlog the next read is taken ahead from what the consumer fetched;
- held records (``kafkaheld.py``): a record handed out is held, with its key and
  delivery count, until every copy of it is acknowledged; they are own pending (after a
  restart the uncommitted tail is read again from the committed offset);
- the commit (``kafkacommit.py``): copies produced, then per partition the offset up to
  the first record still held: a crash re-routes at most that uncommitted tail;
- head counting for ``max_deliveries`` across restarts (``kafkahead.py``,
  ``kafkaattempts.py``);
- reclaim is the group's rebalance: a dead router's partitions go to another member,
  which reads from the committed offset;
- every broker away (``kafkafailures.BrokerWatch``) is raised by the next read with
  nothing in hand, or while a commit waits: the loop backs off, not ready.

Not a Redis server: no lease on the consumer name (the group's member id is the
client's), no service registry, no retention chore (topics' ``retention.ms``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Producer

from synapse import log as logging
from synapse.backend import CommitResult, Pages, Presence, Read
from synapse.backends import kafkaadmin as admin
from synapse.backends.kafkaattempts import Attempts
from synapse.backends.kafkacommit import CONNECT_TIMEOUT_S, Committer, producer_config
from synapse.backends.kafkaconsumer import GroupConsumer
from synapse.backends.kafkafailures import BrokerWatch, classify_kafka
from synapse.backends.kafkahandout import Ahead, hand_out
from synapse.backends.kafkahead import HeadCounter
from synapse.backends.kafkaheld import HeldRecords, Partition
from synapse.backends.kafkaregistry import KafkaHeartbeat
from synapse.backends.kafkastats import GroupLag
from synapse.config import RouterSettings, RoutingTable
from synapse.errors import Failure
from synapse.kafka.records import position
from synapse.kafka.url import parse
from synapse.metrics import Metrics
from synapse.plan import BatchPlan
from synapse.registry import ServiceInfo

#: The longest a consume call blocks: a stop is seen within it.
SLICE_S = 0.1


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
        self._watch = BrokerWatch(log)
        self.producer = Producer(producer_config(self.bootstrap, consumer, self._watch))
        self._group = GroupConsumer(self.bootstrap, consumer, self._watch)
        self._closed = False
        self._data_field = b"data"
        self._subscribed: list[str] = []
        self._held = HeldRecords()
        self._attempts = Attempts(self.bootstrap, self.producer)
        self._heads = HeadCounter(self._attempts, log)
        self._committer = Committer(self.producer, self._group, self._held, self._watch)
        self._lag = GroupLag(self.bootstrap, consumer)
        self._ahead = Ahead(log)

    async def _open(self, settings: RouterSettings) -> None:
        """The group's consumer; a new one (another group) starts with nothing held."""
        if await self._group.open(settings):
            self._subscribed = []
            self._held.clear()
            self._heads.clear()

    # -- the consumer name -------------------------------------------------------------------

    async def start(self, settings: RouterSettings) -> str | None:
        """Check a broker answers (metadata); open the group's consumer. No lease: the
        group's member id is the client's own."""
        data_field = settings.data_field.encode()
        if data_field != self._data_field:  # records held under the old name: copies as fields
            self._held.copy_as_fields()
        self._data_field = self._committer.data_field = data_field
        await asyncio.to_thread(self.producer.list_topics, None, CONNECT_TIMEOUT_S)
        await asyncio.to_thread(self.producer.poll, 0)  # errors queued while it was away
        if self._watch.answered() and self._group.kafka is not None:
            await self._reopen()
        await self._open(settings)
        self.metrics.redis_up.set(1)
        return None

    async def _reopen(self) -> None:
        """After every broker was away: a new consumer, nothing held, from the committed
        offsets (a broker that lost its topics numbers them from 0 again)."""
        held = self._held.count()
        await self._group.close_consumer()
        self.log.warning("kafka_consumer_reopened", reason="all_brokers_down", held=held)

    def renew_s(self, settings: RouterSettings) -> float:
        return 30.0

    # -- sources -----------------------------------------------------------------------------

    async def discover(self, table: RoutingTable, *, create: bool) -> list[str]:
        """Topics of the table's names and globs (metadata, rescanned); missing named sources
        and destinations are created with ``create``; the consumer subscribes to the result."""
        if create:
            await asyncio.to_thread(admin.ensure_topics, self.bootstrap, admin.named_topics(table))
            await asyncio.to_thread(self._attempts.ensure_topic)
        found = await asyncio.to_thread(admin.matching_topics, self.bootstrap, table)
        if found != self._subscribed and found:
            await self._open(table.settings)
            await self._group.subscribe(found)
            self._subscribed = found
            self.log.info("sources_subscribed", topics=found)
        return found

    async def refresh_stats(self, table: RoutingTable, sources: Sequence[str]) -> None:
        """Per source: ``synapse_source_pending`` = records held here (read, not committed);
        ``synapse_source_lag`` = end offsets minus the group's committed offsets
        (``kafkastats.py``; tansu's end offsets under-report: docs/kafka.md)."""
        for source, n in self._held.per_topic(sources).items():
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
        return self._group.assigned()

    async def read(
        self, settings: RouterSettings, sources: Sequence[str], block_ms: int
    ) -> Read | None:
        await self._ahead.settle()  # one read at a time: a dropped read ahead holds first
        if self._group.kafka is None or not self._subscribed:
            await self._wait(block_ms / 1000)
            return None if self.stopping.is_set() else []
        deadline = time.monotonic() + block_ms / 1000
        while True:
            if self.stopping.is_set():
                return None
            left = deadline - time.monotonic()
            found = await self._group.consume(settings.batch, max(0.0, min(SLICE_S, left)))
            self._forget_revoked()
            if found:
                return await hand_out(
                    found, settings, self._held, self._heads, self._group, self._data_field
                )
            self._watch.raise_if_down()  # only with nothing in hand: no record read is dropped
            if left <= 0:
                return []

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    def _forget_revoked(self) -> None:
        """Partitions the group gave to another member: their held records are its to read
        again from the committed offset; routing them here too would only duplicate."""
        for at in self._group.take_revoked():
            dropped = self._held.forget(at)
            self._heads.forget(at)
            self.log.info("partition_revoked", topic=at[0], partition=at[1], held=dropped)

    def read_ahead(
        self, settings: RouterSettings, sources: Sequence[str], previous: Read
    ) -> asyncio.Future[Read] | None:
        """On a backlog (the last read was full), the next read from what the consumer has
        fetched already (no wait), so the next batch is planned while this one's copies
        are acknowledged. Shielded, and kept: once its consume returned its records are
        held, and the next read, ``own_pending`` and ``interrupt`` wait for it first, so a
        read ahead the pipeline drops is never routed past nor overlaps another read."""
        if self.stopping.is_set() or sum(len(b.entries) for b in previous) < settings.batch:
            return None
        return self._ahead.start(lambda: self._read_now(settings))

    async def _read_now(self, settings: RouterSettings) -> Read:
        """What the consumer has fetched, without waiting; an empty read says nothing of
        the brokers (``BrokerWatch``'s signal is the commit's and the next read's to meet)."""
        if self._group.kafka is None or not self._subscribed or self.stopping.is_set():
            return []
        found = await self._group.consume(settings.batch, 0)
        self._forget_revoked()
        if not found:
            return []
        return await hand_out(
            found, settings, self._held, self._heads, self._group, self._data_field
        )

    # -- the commit --------------------------------------------------------------------------

    def commit(self, plan: BatchPlan, group: str) -> asyncio.Future[CommitResult]:
        return asyncio.ensure_future(self._committer.commit(plan))

    # -- held records ------------------------------------------------------------------------

    async def own_pending(
        self, settings: RouterSettings, sources: Sequence[str], *, counted: bool
    ) -> Pages:
        await self._ahead.settle()
        for batch in self._held.batches(sources, counted=counted, due_only=False):
            yield batch

    async def reclaim(self, settings: RouterSettings, sources: Sequence[str]) -> Pages:
        """Nothing per record: the group reassigns a dead router's partitions."""
        return
        yield  # pragma: no cover - an async generator that yields nothing

    def retry_later(self, source: str, entry_id: bytes, delay_s: float) -> None:
        partition, offset = position(entry_id)
        self._held.retry_later((source, partition), offset, delay_s)

    def next_retry_s(self) -> float | None:
        return self._held.next_retry_s()

    async def retries_due(self, settings: RouterSettings) -> Pages:
        for batch in self._held.batches(self._held.sources(), counted=True, due_only=True):
            yield batch

    # -- the rest of the protocol ------------------------------------------------------------

    async def housekeep(self, settings: RouterSettings, sources: Sequence[str]) -> None:
        """The group forgets its members itself."""

    def housekeep_s(self) -> float:
        return 60.0

    def classify(self, exc: BaseException) -> Failure:
        return classify_kafka(exc)

    def presence(self, info: Callable[[], ServiceInfo]) -> Presence:
        """The router's registration in ``synapse.registry`` (as a Bus registers)."""
        return KafkaHeartbeat(self.bootstrap, self.producer, info)

    async def reconfigure(self, old: RouterSettings, new: RouterSettings) -> None:
        """Nothing: each read takes its BLOCK time as a deadline."""

    async def interrupt(self) -> None:
        """A read ahead still running ends holding its records (each consume call is one
        short slice): nothing is in flight between turns."""
        await self._ahead.settle()

    async def farewell(self, settings: RouterSettings, sources: Sequence[str]) -> None:
        """Commit what is acknowledged and leave the group (its partitions move at once)."""
        with contextlib.suppress(Exception):
            await self._committer.commit_offsets()

    async def close(self) -> None:
        """Leave the group, flush and close the producer, drop the admin client: no
        librdkafka client of this backend stays connected (idempotent)."""
        await self._group.close()
        if not self._closed:
            self._closed = True
            await asyncio.to_thread(self.producer.flush, 5.0)
            await asyncio.to_thread(self.producer.close)
            await asyncio.to_thread(self._lag.close)
        admin.forget(self.bootstrap)
