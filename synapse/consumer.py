"""The read loop: own pending first, then new entries; reclaim; back off; commit.

One ``Router`` consumes every source of the table with one consumer group, on a
store behind the backend seam (``backend.py``: single Redis, Redis Cluster).
Each turn of the loop runs the chores that are due (``chores.every``: rescan the
sources, renew the consumer name, reclaim idle entries, housekeeping, refresh the
gauges), retries the refused entries that are due, then reads new entries and
plans and commits them (``pipeline.py``, ``batches.py``); on a backlog the next
read is sent ahead while the batch in hand is planned and committed.

Store errors never end the loop: connection errors, timeouts and server-wide
refusals (OOM, READONLY, LOADING, BUSY...) back off with jitter and mark the
router not ready, and the re-read of our pending entries that follows does not
count as a delivery; a missing group sets up again per the ``start`` policy
(``turnfailure.py`` answers a failed turn, by ``retry.py``'s verdict). Refused
entries due for a retry are claimed before each read, and the blocking read waits
no longer than the first of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from typing import Unpack

from synapse import log as logging
from synapse.backend import Backend
from synapse.backends import StoreOptions, open_backend
from synapse.backoff import Backoff
from synapse.batches import Batches
from synapse.chores import every
from synapse.config import RoutingTable
from synapse.errors import ConsumerInUse
from synapse.metrics import Metrics
from synapse.pipeline import Pipeline
from synapse.plan import Planner
from synapse.summary import Summary
from synapse.turnfailure import TurnFailures

STATS_INTERVAL_S = 5.0
#: How often retention by age (``max_age``) trims, when the table has such rules.
RETENTION_INTERVAL_S = 60.0


def default_consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


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
        summary_interval_s: float | None = None,
        retention_interval_s: float = RETENTION_INTERVAL_S,
        **store: Unpack[StoreOptions],
    ) -> None:
        self.table = table
        self.planner = Planner(table)
        self.metrics = metrics
        self.consumer = consumer or table.settings.consumer or default_consumer_name()
        self.backoff = backoff or Backoff()
        self.on_progress = on_progress or (lambda: None)
        self.log = logging.get("synapse.router").bind(consumer=self.consumer)
        self.stopping = asyncio.Event()
        self._failures = TurnFailures(metrics, self.log, self.backoff)
        # router_summary every interval (60 s), dead letters at WARNING, rate-limited.
        metrics.watch_routes((r.name, r.to) for r in table.routes)
        self.summary = Summary(
            metrics, self.log, interval_s=summary_interval_s, now=time.monotonic()
        )
        self.backend: Backend = open_backend(
            url,
            consumer=self.consumer,
            password=password,
            block_ms=table.settings.block_ms,
            metrics=metrics,
            stopping=self.stopping,
            log=self.log,
            **store,
        )
        self.cluster = self.backend.name == "cluster"
        self._batches = Batches(
            self.backend, metrics, self.log, self.on_progress, self.summary.dead_letter
        )
        self._pipeline = Pipeline(self.backend, self._batches)
        self.failure: ConsumerInUse | None = None
        self.sources: list[str] = []
        self.ready = False
        self._next_table: RoutingTable | None = None
        self._needs_setup = True
        # The chores, each on its own timer (intervals follow the table: _timers).
        settings = table.settings
        self._rescan = every(settings.rescan_interval_ms / 1000)
        self._renew = every(self.backend.renew_s(settings))
        self._reclaim = every(settings.claim_idle_ms / 1000 / 2)
        self._housekeep = every(self.backend.housekeep_s())
        self._retention = every(retention_interval_s)
        self._stats = every(STATS_INTERVAL_S)
        # Whether the next re-read of our own pending entries counts as a delivery: at
        # start (a restart under a fixed name may follow a crash on an entry) and after
        # an error that may have come from an entry; never after an outage (retry.py).
        self._count_redelivery = True

    # -- control (called from the daemon) -------------------------------------------------

    def stop(self) -> None:
        """Stop reading; the batch in hand is finished and committed."""
        self.stopping.set()

    def swap_table(self, table: RoutingTable) -> None:
        """Use ``table`` from the next batch on (a batch finishes on the table it started)."""
        self._next_table = table
        self._pipeline.hold = True  # no further read ahead: the swap comes sooner

    async def close(self) -> None:
        await self.backend.close()

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
            except Exception as exc:  # what happens next is by its kind: turnfailure.py
                attempt += 1
                answer = self._failures.answer(
                    exc,
                    self.backend.classify(exc),
                    attempt,
                    ready=self.ready,
                    group=self.table.settings.group,
                    backend=self.backend.name,
                )
                self._needs_setup = True
                self._count_redelivery = self._count_redelivery or answer.recount
                self.ready = self.ready and not answer.down
                await self._sleep(answer.delay_s)
        self.summary.emit(time.monotonic())  # the last interval, on the way out
        await self._farewell()

    async def _farewell(self) -> None:
        """On a clean stop: leave the group if nothing is pending, free the name."""
        await self.backend.interrupt()
        if self.failure is not None:
            return  # the name belongs to another process: touch neither
        await self.backend.farewell(self.table.settings, self.sources)

    async def _sleep(self, seconds: float) -> None:
        self.on_progress()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _apply_table(self, table: RoutingTable) -> None:
        old = self.table
        self.table, self.planner, self._next_table = table, Planner(table), None
        self._pipeline.hold = False
        self.metrics.watch_routes((r.name, r.to) for r in table.routes)
        self._timers()
        await self.backend.reconfigure(old.settings, table.settings)
        if (
            old.sources != table.sources
            or old.settings.group != table.settings.group
            or old.settings.start != table.settings.start
        ):
            self._needs_setup = True

    def _timers(self) -> None:
        """The chores' intervals under the current table."""
        settings = self.table.settings
        self._rescan.interval_s = settings.rescan_interval_ms / 1000
        self._renew.interval_s = self.backend.renew_s(settings)
        self._reclaim.interval_s = settings.claim_idle_ms / 1000 / 2

    async def setup(self) -> None:
        """Connect, find the sources, create groups, drain our own pending entries."""
        await self.backend.interrupt()  # in-flight reads would race the pending drain
        await self._renew_name()
        await self.discover(create=True)
        settings = self.table.settings
        await self._pipeline.each(
            self.planner,
            self.backend.own_pending(settings, self.sources, counted=self._count_redelivery),
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
        """One turn: the chores that are due, the retries that are due, then one blocking
        read and its commits."""
        now = time.monotonic()
        settings = self.table.settings
        if self._rescan.due(now):
            await self.discover(create=False)
        if self._renew.due(now):
            await self._renew_name()
        if self._reclaim.due(now):
            await self._pipeline.each(self.planner, self.backend.reclaim(settings, self.sources))
        if self._housekeep.due(now):
            await self.backend.housekeep(settings, self.sources)
        if self.table.max_ages and self._retention.due(now):
            await self.trim_by_age()
        if self._stats.due(now):
            await self.refresh_stats()
        due_s = self.backend.next_retry_s()
        if due_s == 0:
            await self._pipeline.each(self.planner, self.backend.retries_due(settings))
            due_s = self.backend.next_retry_s()
        self.on_progress()
        block_ms = (
            settings.block_ms if due_s is None else min(settings.block_ms, int(due_s * 1000) + 1)
        )
        if not self.sources:
            await self._sleep(block_ms / 1000)
            return
        read = await self.backend.read(settings, self.sources, block_ms)
        if read:
            await self._pipeline.route(self.planner, self.sources, read)

    # -- the chores ------------------------------------------------------------------------

    async def _renew_name(self) -> None:
        """Take or renew this consumer's name (ConsumerInUse if another process holds it)."""
        taken_from = await self.backend.start(self.table.settings)
        self._renew.ran(time.monotonic())
        if taken_from:
            self.log.warning("consumer_lease_taken_over", previous=taken_from)

    @property
    def batches(self) -> int:
        """Batches committed so far."""
        return self._batches.count

    async def discover(self, create: bool) -> None:
        """Resolve source names and globs to sources; create missing groups."""
        self._rescan.ran(time.monotonic())
        self.sources = await self.backend.discover(self.table, create=create)

    async def trim_by_age(self) -> None:
        """Retention by age (``max_age``) on every stream the router reads or writes."""
        now_ms = int(time.time() * 1000)
        removed = await self.backend.trim_by_age(self.table, self.sources, now_ms)
        if removed:
            self.log.info("retention_trimmed", streams=removed)

    async def refresh_stats(self) -> None:
        """Per-source lag and pending gauges (on an interval, not per batch)."""
        await self.backend.refresh_stats(self.table, self.sources)
