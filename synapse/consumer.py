"""The read loop: own pending first, then new entries; reclaim; back off; commit.

One ``Router`` consumes every source of the table with one consumer group. Each
turn of the loop runs the chores that are due (rescan the sources, renew the
lease on our name, reclaim idle entries, forget idle consumers, refresh the
gauges), then reads up to ``batch`` entries per source with one blocking
XREADGROUP (``reads.py``) and plans and commits each source's entries
atomically (``batches.py``). Sources and groups live in ``sources.py``; pending
entries and their delivery counts in ``pending.py``.

Redis errors never end the loop: connection errors, timeouts and server-wide
refusals (OOM, READONLY, LOADING, BUSY...) back off with jitter and mark the
router not ready, and the re-read of our pending entries that follows does not
count as a delivery (``retry.py``); NOGROUP recreates the group per the
``start`` policy. Refused entries due for a retry are claimed before each read,
and the blocking read waits no longer than the first of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Sequence

from redis.exceptions import ResponseError

from synapse import log as logging
from synapse import membership, retention, sources, wire
from synapse.backoff import Backoff
from synapse.batches import Batches
from synapse.cluster import connect_any, is_cluster_url
from synapse.clustercommit import commit_cluster
from synapse.commit import commit
from synapse.config import RoutingTable
from synapse.errors import ConsumerInUse, Failure
from synapse.failures import classify
from synapse.groupstats import GroupStats
from synapse.matching import is_glob
from synapse.metrics import Metrics
from synapse.pending import Pending
from synapse.plan import Entry, Planner, ReadReply
from synapse.reads import Reads
from synapse.retry import OUTAGE, RAISED, REDELIVER, SETUP, Action, verdict
from synapse.summary import Summary

STATS_INTERVAL_S = 5.0
COMMIT_TIMEOUT_S = 30.0


def default_consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def connect(url: str, *, read_timeout_s: float, password: str | None = None) -> wire.Client:
    """A client for ``url`` (redis://, rediss://, unix://, redis+cluster://), bounded timeouts."""
    return connect_any(url, read_timeout_s=read_timeout_s, password=password)


class Router:
    """Consumes the sources of a routing table and commits each batch atomically."""

    def __init__(
        self,
        table: RoutingTable,
        url: str,
        metrics: Metrics,
        *,
        consumer: str | None = None,
        password: str | None = None,
        backoff: Backoff | None = None,
        on_progress: Callable[[], None] | None = None,
        lease_ttl_ms: int = membership.LEASE_TTL_MS,
        forget_idle_ms: int = membership.FORGET_IDLE_MS,
        summary_interval_s: float | None = None,
        retention_interval_s: float = retention.INTERVAL_S,
    ) -> None:
        self.table = table
        self.planner = Planner(table)
        self.url = url
        self.metrics = metrics
        self.consumer = consumer or table.settings.consumer or default_consumer_name()
        self.password = password
        self.backoff = backoff or Backoff()
        self.on_progress = on_progress or (lambda: None)
        self.log = logging.get("synapse.router").bind(consumer=self.consumer)
        self.stopping = asyncio.Event()
        # router_summary every interval (60 s), dead letters at WARNING, rate-limited.
        self.group_stats = GroupStats(metrics)
        metrics.watch_routes((r.name, r.to) for r in table.routes)
        self.summary = Summary(
            metrics, self.log, interval_s=summary_interval_s, now=time.monotonic()
        )
        # Redis Cluster: one XREADGROUP per slot, and a per-slot commit (cluster.py).
        self.cluster = is_cluster_url(url)
        self._reads = Reads(
            url,
            password,
            self.consumer,
            table.settings.block_ms,
            cluster=self.cluster,
            stopping=self.stopping,
        )
        self.writer = connect(url, read_timeout_s=COMMIT_TIMEOUT_S, password=password)
        # Many routers: a lease on our consumer name; long-idle empty consumers forgotten.
        self.lease_ttl_ms = lease_ttl_ms
        self.lease = membership.ConsumerLease(table.settings.group, self.consumer, lease_ttl_ms)
        self.forget_idle_ms = forget_idle_ms
        self.failure: ConsumerInUse | None = None
        self._last_lease = 0.0
        self._last_forget = 0.0
        self.sources: list[str] = []
        self._skipped_names: set[bytes] = set()  # globbed streams warned about (sources.py)
        self.ready = False
        self._next_table: RoutingTable | None = None
        self._needs_setup = True
        self._last_rescan = 0.0
        self._last_claim = 0.0
        self._last_stats = 0.0
        self.retention_interval_s = retention_interval_s
        self._last_retention = 0.0
        self._pending = Pending(
            self.writer,
            self.consumer,
            process=self.process,
            stopping=self.stopping,
            metrics=metrics,
            log=self.log,
        )
        self._batches = Batches(
            self.writer,
            commit_cluster if self.cluster else commit,
            metrics,
            self.log,
            self.on_progress,
            self._pending.schedule,
            self.summary.dead_letter,
        )
        # Whether the next re-read of our own pending entries counts as a delivery: at
        # start (a restart under a fixed name may follow a crash on an entry) and after
        # an error that may have come from an entry; never after an outage (retry.py).
        self._count_redelivery = True

    @property
    def reader(self) -> wire.Client:
        """The blocking-read connection (replaced when BLOCK changes)."""
        return self._reads.client

    # -- control (called from the daemon) -------------------------------------------------

    def stop(self) -> None:
        """Stop reading; the batch in hand is finished and committed."""
        self.stopping.set()

    def swap_table(self, table: RoutingTable) -> None:
        """Use ``table`` from the next batch on (a batch finishes on the table it started)."""
        self._next_table = table

    async def close(self) -> None:
        await self._reads.close()
        await self.writer.aclose()

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        attempt = 0
        while not self.stopping.is_set():
            self.summary.tick(time.monotonic())
            try:
                if self._next_table is not None:
                    await self._apply_table(self._next_table)
                if self._needs_setup:
                    await self.setup()
                await self.turn()
                attempt = 0
            except ConsumerInUse as exc:
                self.failure = exc
                self.log.error("consumer_name_in_use", error=str(exc))
                break
            except Exception as exc:  # what happens next is retry.verdict's, by its kind
                attempt += 1
                failure = classify(exc)
                judged = verdict(RAISED, failure=failure)
                if judged.action == SETUP:
                    self.metrics.redis_errors.labels(Failure.NO_GROUP).inc()
                    self.log.warning(
                        "group_missing", error=str(exc), group=self.table.settings.group
                    )
                    self._needs_setup = True
                    await self._sleep(self.backoff.delay_s(attempt) if attempt > 1 else 0)
                    continue
                if failure == Failure.INTERNAL:  # a bug must not stop routing for good
                    self.log.exception("router_error", error=repr(exc), attempt=attempt)
                if judged.action == REDELIVER:
                    self._count_redelivery = True
                self._down(_label(failure, judged.action), exc, attempt)
                await self._sleep(self.backoff.delay_s(attempt))
        self.summary.emit(time.monotonic())  # the last interval, on the way out
        await self._farewell()

    async def _farewell(self) -> None:
        """On a clean stop: leave the group if nothing is pending, free the name's lease."""
        await self._reads.cancel()
        if self.failure is not None:
            return  # the name belongs to another process: touch neither
        group = self.table.settings.group
        with contextlib.suppress(Exception):
            for source in self.sources:
                await membership.forget(self.writer, source, group, self.consumer, 0)
            await self.lease.release(self.writer)

    def _down(self, kind: str, exc: BaseException, attempt: int) -> None:
        self.metrics.redis_errors.labels(kind).inc()
        if self.ready or attempt == 1:
            self.log.warning("redis_unavailable", kind=kind, error=str(exc), attempt=attempt)
        self.ready = False
        self.metrics.redis_up.set(0)
        self.metrics.ready.set(0)
        self._needs_setup = True

    async def _sleep(self, seconds: float) -> None:
        self.on_progress()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _apply_table(self, table: RoutingTable) -> None:
        old = self.table
        self.table, self.planner, self._next_table = table, Planner(table), None
        self.metrics.watch_routes((r.name, r.to) for r in table.routes)
        if old.settings.block_ms != table.settings.block_ms:
            # The read timeout must outlast the new BLOCK time: a new reader connection.
            await self._reads.reconnect(table.settings.block_ms)
        if old.settings.group != table.settings.group:
            self.lease = membership.ConsumerLease(
                table.settings.group, self.consumer, self.lease_ttl_ms
            )
        if (
            old.sources != table.sources
            or old.settings.group != table.settings.group
            or old.settings.start != table.settings.start
        ):
            self._needs_setup = True

    async def setup(self) -> None:
        """Connect, find the sources, create groups, drain our own pending entries."""
        await self._reads.cancel()  # in-flight reads would race the pending drain
        await self.writer.ping()
        self.metrics.redis_up.set(1)
        await self._renew_lease()
        await self.discover(create=True)
        await self._pending.drain_own(
            self.table.settings, self.sources, count=self._count_redelivery
        )
        self._count_redelivery = False
        self._needs_setup = False
        if not self.ready:
            self.log.info(
                "router_ready",
                sources=self.sources,
                group=self.table.settings.group,
                config=self.table.hash,
            )
        self.ready = True
        self.metrics.ready.set(1)

    async def turn(self) -> None:
        """One turn: periodic chores, then one blocking read and its commits."""
        now = time.monotonic()
        settings = self.table.settings
        if now - self._last_rescan >= settings.rescan_interval_ms / 1000:
            await self.discover(create=False)
        if now - self._last_lease >= self.lease_ttl_ms / 1000 / 3:
            await self._renew_lease()
        if now - self._last_claim >= settings.claim_idle_ms / 1000 / 2:
            self._last_claim = now
            await self._pending.reclaim(settings, self.sources)
        if now - self._last_forget >= min(self.forget_idle_ms / 2, 60_000) / 1000:
            self._last_forget = now
            await self.forget_idle()
        if self.table.max_ages and now - self._last_retention >= self.retention_interval_s:
            self._last_retention = now
            await self.trim_by_age()
        if now - self._last_stats >= STATS_INTERVAL_S:
            self._last_stats = now
            await self.refresh_stats()
        due_s = self._pending.next_due_s()
        if due_s == 0:
            await self._pending.retry_due(settings)
            due_s = self._pending.next_due_s()
        self.on_progress()
        block_ms = (
            settings.block_ms if due_s is None else min(settings.block_ms, int(due_s * 1000) + 1)
        )
        if not self.sources:
            await self._sleep(block_ms / 1000)
            return
        reply = await self._reads.next(settings, self.sources, block_ms)
        if reply is None:
            return
        await self._batches.route(self.planner, reply, self._read_more)

    def _read_more(self, reply: ReadReply) -> asyncio.Future[ReadReply] | None:
        """The next read sent ahead on a backlog (``Reads.ahead``), unless a swap waits."""
        if self._next_table is not None:
            return None
        return self._reads.ahead(self.table.settings, self.sources, reply)

    # -- many routers ----------------------------------------------------------------------

    async def _renew_lease(self) -> None:
        """Take or renew the lease on our consumer name (ConsumerInUse if another holds it)."""
        taken_from = await self.lease.acquire(self.writer)
        self._last_lease = time.monotonic()
        if taken_from:
            self.log.warning("consumer_lease_taken_over", previous=taken_from)

    async def forget_idle(self) -> None:
        """Delete consumers idle longer than forget_idle_ms that have nothing pending."""
        group = self.table.settings.group
        for source in self.sources:
            try:
                gone = await membership.forget_idle(
                    self.writer, source, group, self.consumer, self.forget_idle_ms
                )
            except ResponseError:
                continue  # the stream or group vanished since the scan
            if gone:
                self.log.info("consumers_forgotten", source=source, consumers=gone)

    # -- batches, sources, pending (batches.py, sources.py, pending.py) ----------------------

    @property
    def batches(self) -> int:
        """Batches committed so far."""
        return self._batches.count

    async def process(
        self, source: str, entries: Sequence[Entry], deliveries: dict[bytes, int] | None
    ) -> None:
        """Plan one source's entries and commit them; account in metrics."""
        await self._batches.process(self.planner, source, entries, deliveries)

    async def discover(self, create: bool) -> None:
        """Resolve source names and globs to streams; create missing groups."""
        self._last_rescan = time.monotonic()
        self.sources = await sources.discover(
            self.writer,
            self.table,
            self.sources,
            create=create,
            metrics=self.metrics,
            log=self.log,
            skipped=self._skipped_names,
        )

    async def trim_by_age(self) -> None:
        """Retention by age (``max_age``): XTRIM MINID on every stream a rule matches."""
        s = self.table.settings
        known = [*self.sources, *self.table.destinations, s.dead_letter]
        if s.unrouted not in ("dead-letter", "drop"):
            known.append(s.unrouted)
        removed = await retention.trim_by_age(
            self.writer,
            self.table,
            [name for name in known if not is_glob(name)],
            self.sources,
            int(time.time() * 1000),
        )
        if removed:
            self.log.info("retention_trimmed", streams=removed)

    async def refresh_stats(self) -> None:
        """Per-source lag and pending gauges (on an interval, not per batch)."""
        group = self.table.settings.group
        await sources.refresh_stats(self.writer, self.sources, group, self.metrics)
        destinations = [d for d in self.table.destinations if not is_glob(d)]
        await self.group_stats.refresh(self.writer, destinations)

    async def delivery_counts(self, source: str, entries: Sequence[Entry]) -> dict[bytes, int]:
        """Delivery counts of ``entries`` from the group's pending list."""
        return await self._pending.delivery_counts(source, self.table.settings.group, entries)


def _label(failure: Failure, action: Action) -> str:
    """The ``kind`` of ``synapse_redis_errors_total`` for a failed turn."""
    if failure in (Failure.CONNECTION, Failure.INTERNAL):
        return failure
    return Failure.OUTAGE if action == OUTAGE else Failure.RESPONSE
