"""The single-Redis backend: streams, one consumer group, the Lua commit.

Two connections: the reader (``reads.py``: a blocking XREADGROUP whose read
timeout outlasts BLOCK, and the read sent ahead on a backlog) and the writer
(everything else: the commit, the pending list, groups, the lease, gauges). The
pieces it puts behind ``synapse.backend.Backend``:

- sources and groups: ``sources.py`` (SCAN for globs, XGROUP CREATE, BUSYGROUP
  is success), gauges from XINFO GROUPS (``groupstats.py`` for the groups that
  consume the destinations); retention by age: ``retention.py`` (XTRIM MINID);
- pending entries: ``pending.py`` (own pending first, XAUTOCLAIM reclaim,
  XCLAIM retries of refused entries, delivery counts from XPENDING);
- the commit: ``commit.py`` (one Lua script per batch: copies, dead letters, ack);
- many routers: ``membership.py`` (a lease on the consumer name, idle consumers
  forgotten); the service registry: ``registry.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from redis.exceptions import ResponseError

from synapse import log as logging
from synapse import membership, retention, wire
from synapse import sources as source_io
from synapse.backend import Batch, CommitResult, Pages, Presence, Read
from synapse.commit import commit
from synapse.config import RouterSettings, RoutingTable
from synapse.errors import Failure
from synapse.failures import classify
from synapse.groupstats import GroupStats
from synapse.matching import is_glob
from synapse.metrics import Metrics
from synapse.pending import Pending
from synapse.plan import BatchPlan
from synapse.reads import Reads
from synapse.registry import Heartbeat, ServiceInfo

#: The writer's read timeout: a commit of a whole batch answers well within it.
COMMIT_TIMEOUT_S = 30.0


class RedisBackend:
    """Routes on one Redis server (``redis://``, ``rediss://``, ``unix://``)."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        consumer: str,
        password: str | None,
        block_ms: int,
        metrics: Metrics,
        stopping: asyncio.Event,
        log: logging.Logger,
        lease_ttl_ms: int = membership.LEASE_TTL_MS,
        forget_idle_ms: int = membership.FORGET_IDLE_MS,
    ) -> None:
        self.consumer = consumer
        self.metrics = metrics
        self.stopping = stopping
        self.log = log
        self.lease_ttl_ms = lease_ttl_ms
        self.forget_idle_ms = forget_idle_ms
        self.reads = Reads(url, password, consumer, block_ms, stopping=stopping)
        self.client = wire.connect_any(url, read_timeout_s=COMMIT_TIMEOUT_S, password=password)
        self.pending = Pending(self.client, consumer, stopping=stopping, metrics=metrics, log=log)
        self._lease: membership.ConsumerLease | None = None
        self.group_stats = GroupStats(metrics)  # consuming services' lag, per destination
        self._sources: list[str] = []
        self._skipped_names: set[bytes] = set()  # globbed streams warned about (sources.py)

    # -- the consumer name -------------------------------------------------------------

    async def start(self, settings: RouterSettings) -> str | None:
        await self.client.ping()
        self.metrics.redis_up.set(1)
        if self._lease is None or self._lease.group != settings.group:
            self._lease = membership.ConsumerLease(settings.group, self.consumer, self.lease_ttl_ms)
        return await self._lease.acquire(self.client)

    def renew_s(self, settings: RouterSettings) -> float:
        return self.lease_ttl_ms / 1000 / 3

    @property
    def lease(self) -> membership.ConsumerLease | None:
        """The lease on the consumer name, once taken."""
        return self._lease

    # -- sources -----------------------------------------------------------------------

    async def discover(self, table: RoutingTable, *, create: bool) -> list[str]:
        self._sources = await source_io.discover(
            self.client,
            table,
            self._sources,
            create=create,
            metrics=self.metrics,
            log=self.log,
            skipped=self._skipped_names,
        )
        return self._sources

    async def refresh_stats(self, table: RoutingTable, sources: Sequence[str]) -> None:
        group = table.settings.group
        await source_io.refresh_stats(self.client, sources, group, self.metrics)
        destinations = [d for d in table.destinations if not is_glob(d)]
        await self.group_stats.refresh(self.client, destinations)

    async def trim_by_age(
        self, table: RoutingTable, sources: Sequence[str], now_ms: int
    ) -> dict[str, int]:
        named = [s for s in (*sources, *source_io.written_by(table)) if not is_glob(s)]
        return await retention.trim_by_age(self.client, table, named, sources, now_ms)

    # -- reads and commits ---------------------------------------------------------------

    async def read(
        self, settings: RouterSettings, sources: Sequence[str], block_ms: int
    ) -> Read | None:
        return await self.reads.next(settings, sources, block_ms)

    def read_ahead(
        self, settings: RouterSettings, sources: Sequence[str], previous: Read
    ) -> asyncio.Future[Read] | None:
        return self.reads.ahead(settings, sources, previous)

    def commit(self, plan: BatchPlan, group: str) -> asyncio.Future[CommitResult]:
        return asyncio.ensure_future(commit(self.client, plan, group))

    # -- pending entries -----------------------------------------------------------------

    def own_pending(
        self, settings: RouterSettings, sources: Sequence[str], *, counted: bool
    ) -> Pages:
        return self.pending.drain_own(settings, sources, count=counted)

    def reclaim(self, settings: RouterSettings, sources: Sequence[str]) -> Pages:
        return self.pending.reclaim(settings, sources)

    def retry_later(self, source: str, entry_id: bytes, delay_s: float) -> None:
        self.pending.schedule(source, entry_id, delay_s)

    def next_retry_s(self) -> float | None:
        return self.pending.next_due_s()

    def retries_due(self, settings: RouterSettings) -> Pages:
        return self.pending.retry_due(settings)

    async def delivery_counts(self, settings: RouterSettings, batch: Batch) -> dict[bytes, int]:
        """Delivery counts of ``batch``'s entries from the group's pending list."""
        return await self.pending.delivery_counts(batch.source, settings.group, batch.entries)

    # -- many routers ----------------------------------------------------------------------

    def housekeep_s(self) -> float:
        return min(self.forget_idle_ms / 2, 60_000) / 1000

    async def housekeep(self, settings: RouterSettings, sources: Sequence[str]) -> None:
        """Delete consumers idle longer than forget_idle_ms that have nothing pending."""
        for source in sources:
            try:
                gone = await membership.forget_idle(
                    self.client, source, settings.group, self.consumer, self.forget_idle_ms
                )
            except ResponseError:
                continue  # the stream or group vanished since the scan
            if gone:
                self.log.info("consumers_forgotten", source=source, consumers=gone)

    def classify(self, exc: BaseException) -> Failure:
        return classify(exc)

    def presence(self, info: Callable[[], ServiceInfo]) -> Presence:
        # On a cluster too: every registry key carries the {registry} hash tag (keys.py).
        return Heartbeat(self.client, info)

    # -- lifecycle -------------------------------------------------------------------------

    async def reconfigure(self, old: RouterSettings, new: RouterSettings) -> None:
        if old.block_ms != new.block_ms:
            # The read timeout must outlast the new BLOCK time: a new reader connection.
            await self.reads.reconnect(new.block_ms)

    async def interrupt(self) -> None:
        """Nothing in flight between turns on one server (the cluster's reads are)."""

    async def farewell(self, settings: RouterSettings, sources: Sequence[str]) -> None:
        with contextlib.suppress(Exception):
            for source in sources:
                await membership.forget(self.client, source, settings.group, self.consumer, 0)
            if self._lease is not None:
                await self._lease.release(self.client)

    async def close(self) -> None:
        await self.reads.close()
        await self.client.aclose()
