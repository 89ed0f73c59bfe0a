"""One batch: plan it, commit it atomically, handle refused entries, count it.

The router hands each source's entries here (``Batches.process``), or a whole
read (``Batches.route``). A batch is planned and committed on the planner, and
so the table, it started with. Entries whose destination refused are left
pending, or dead-lettered once their delivery count (from the pending list)
reaches ``max_deliveries``. Metrics are counted per batch, grouped by value.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from synapse import wire
from synapse.commit import CommitResult
from synapse.metrics import Metrics, observe_many
from synapse.plan import DEAD_LETTER, DELETED, DROPPED, ROUTED, BatchPlan, Entry, Planner

#: Longest stretch of read-ahead pipelining before the loop returns to its chores.
PIPELINE_MAX_S = 1.0

#: Applies a plan for a group: ``commit.commit`` or ``cluster.commit_cluster``.
Commit = Callable[[wire.Client, BatchPlan, str], Awaitable[CommitResult]]
#: Given a read's reply, the next non-blocking read already sent, or None (no backlog).
ReadMore = Callable[[Any], "asyncio.Future[Any] | None"]


@dataclass(slots=True)
class _InFlight:
    """A planned batch and, once sent, its commit."""

    source: str
    entries: Sequence[Entry]
    deliveries: dict[bytes, int] | None
    plan: BatchPlan
    planner: Planner
    now_ms: int
    started: float
    commit: asyncio.Future[CommitResult] | None = None


class Batches:
    """Plans and commits batches on the writer connection; counts them in ``count``."""

    def __init__(
        self,
        writer: wire.Client,
        commit: Commit,
        metrics: Metrics,
        log: Any,
        on_progress: Callable[[], None],
    ) -> None:
        self.writer = writer
        self._commit = commit
        self.metrics = metrics
        self.log = log
        self.on_progress = on_progress
        self.count = 0

    async def process(
        self,
        planner: Planner,
        source: str,
        entries: Sequence[Entry],
        deliveries: dict[bytes, int] | None,
    ) -> None:
        """Plan one source's entries and commit them; account in metrics."""
        if not entries:
            return
        await self._finish(self._send(self._plan(planner, source, entries, deliveries)))

    async def route(self, planner: Planner, reply: Any, read_more: ReadMore) -> None:
        """Plan and commit ``reply``; while reads come back full, keep the server busy.

        With a backlog, the next (non-blocking) read is sent before this batch is
        planned, and a commit is awaited only once the next batch is planned, so
        the router plans batch k+1 while the server applies batch k. Commits keep
        the read order with one in flight, each atomic; nothing is in flight when
        this returns (the chores, a table swap and a stop act between turns).
        Entries read ahead but not committed after an error stay in our pending
        list: the set-up after the error re-processes them first.
        """
        deadline = time.monotonic() + PIPELINE_MAX_S
        inflight: _InFlight | None = None
        ahead: asyncio.Future[Any] | None = None
        try:
            while reply:
                if time.monotonic() < deadline:
                    ahead = read_more(reply)
                    if ahead is not None:
                        await asyncio.sleep(0)  # on the wire before we plan, not after
                for stream, entries in reply:
                    if not entries:
                        continue
                    planned = self._plan(planner, stream.decode(), entries, None)
                    if inflight is not None:
                        done, inflight = inflight, None
                        await self._finish(done)
                    inflight = self._send(planned)
                    await asyncio.sleep(0)  # the server applies it while we plan the next
                if ahead is None:
                    break
                reply, ahead = await ahead, None
        finally:
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await ahead
            if inflight is not None:
                await self._finish(inflight)

    def _plan(
        self,
        planner: Planner,
        source: str,
        entries: Sequence[Entry],
        deliveries: dict[bytes, int] | None,
    ) -> _InFlight:
        started = time.perf_counter()
        now_ms = int(time.time() * 1000)
        plan = planner.plan_batch(source, entries, now_ms, deliveries)
        return _InFlight(source, entries, deliveries, plan, planner, now_ms, started)

    def _send(self, batch: _InFlight) -> _InFlight:
        """Start the batch's commit (it runs to the end even if the router is stopped)."""
        group = batch.planner.table.settings.group
        batch.commit = asyncio.ensure_future(self._commit(self.writer, batch.plan, group))
        return batch

    async def _finish(self, batch: _InFlight) -> None:
        """Wait for the batch's commit; handle refused entries; account in metrics."""
        assert batch.commit is not None
        # Shielded: a stop request never interrupts a commit in flight.
        result = await asyncio.shield(batch.commit)
        source, entries, plan = batch.source, batch.entries, batch.plan
        self.metrics.consumed.labels(source).inc(len(entries))
        committed = plan.entries
        if result.failed or result.skipped:
            left = result.skipped | result.failed.keys()
            committed = tuple(e for e in plan.entries if e.entry_id not in left)
        if result.skipped:
            # Acknowledged before this commit ran (another consumer reclaimed them while we
            # stalled, or a lost reply was re-run): nothing was written twice.
            self.log.warning(
                "entries_already_committed", source=source, entries=len(result.skipped)
            )
        if result.failed:
            await self._handle_failed(batch, result.failed)
        account(self.metrics, committed, batch.now_ms)
        self.metrics.batch.observe(time.perf_counter() - batch.started)
        self.count += 1
        self.on_progress()  # a long reclaim or drain is progress too (systemd watchdog)

    async def _handle_failed(self, batch: _InFlight, failed: dict[bytes, str]) -> None:
        """Entries whose destination refused: dead-letter at the limit, else leave pending."""
        source, planner, now_ms = batch.source, batch.planner, batch.now_ms
        settings = planner.table.settings
        src = source.encode()
        give_up = []
        for entry_id, fields in batch.entries:
            if entry_id not in failed or fields is None:
                continue
            count = (batch.deliveries or {}).get(entry_id, 1)
            if count >= settings.max_deliveries:
                give_up.append(
                    planner.dead_letter(
                        src, entry_id, fields, "destination_error", failed[entry_id], count, now_ms
                    )
                )
            else:
                self.metrics.retried.labels(source).inc()
        if give_up:
            again = await self._commit(
                self.writer, BatchPlan(source, tuple(give_up)), settings.group
            )
            left = again.skipped | again.failed.keys()
            account(self.metrics, tuple(e for e in give_up if e.entry_id not in left), now_ms)
        self.log.warning(
            "destination_refused",
            source=source,
            entries=len(failed),
            dead_lettered=len(give_up),
            error=next(iter(failed.values())),
        )


def account(metrics: Metrics, entries: Sequence[Any], now_ms: int) -> None:
    """Count a committed batch: grouped per batch, so the cost is per distinct value."""
    by_routes: Tally[tuple[tuple[str, str], ...]] = Tally(
        [e.routes for e in entries if e.outcome == ROUTED]
    )
    routed: Tally[tuple[str, str]] = Tally()
    for routes, n in by_routes.items():
        for pair in routes:
            routed[pair] += n
    for (dest, route), n in routed.items():
        metrics.routed.labels(route, dest).inc(n)
    if by_routes.total() != len(entries):
        dead: Tally[str] = Tally()
        dropped: Tally[str] = Tally()
        for e in entries:
            if e.outcome == DEAD_LETTER:
                dead[e.reason] += 1
            elif e.outcome == DROPPED:
                dropped[e.reason or "policy"] += 1
            elif e.outcome == DELETED:
                dropped["deleted"] += 1
        for reason, n in dead.items():
            metrics.dead_lettered.labels(reason).inc(n)
        for reason, n in dropped.items():
            metrics.dropped.labels(reason).inc(n)
    # Entry ids start with their millisecond: a batch holds few distinct ones.
    stamps: Tally[bytes] = Tally([e.entry_id.partition(b"-")[0] for e in entries])
    for ms, n in stamps.items():
        observe_many(metrics.latency, max(0.0, (now_ms - int(ms)) / 1000), n)
