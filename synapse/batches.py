"""One batch: plan it, commit it through the backend, handle refused entries, count it.

A batch is planned (``plan``), its commit started (``send``) and waited for
(``finish``); ``pipeline.py`` decides when, so that on a backlog batch k+1 is
planned while the store applies batch k. A batch is planned and committed on the
planner, and so the table, it started with. Entries a destination refused are
handed back to the backend for a retry after a backoff (``Backend.retry_later``),
or given up once their delivery count reaches ``max_deliveries`` (``retry.py``).
Metrics are counted per batch, grouped by value.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter as Tally
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from synapse import log as logging
from synapse.backend import Backend, Batch, CommitResult, entry_times
from synapse.errors import Outage, classify_reply
from synapse.giveup import give_up as plan_give_up
from synapse.metrics import Metrics, observe_many
from synapse.plan import (
    DEAD_LETTER,
    DELETED,
    DROPPED,
    ROUTED,
    BatchPlan,
    Entry,
    EntryPlan,
    Planner,
)
from synapse.retry import GIVE_UP, OUTAGE, REFUSED, REGIVEN, verdict


@dataclass(slots=True)
class InFlight:
    """A planned batch and, once sent, its commit."""

    source: str
    entries: Sequence[Entry]
    deliveries: Mapping[bytes, int] | None
    plan: BatchPlan
    planner: Planner
    now_ms: int
    started: float
    commit: asyncio.Future[CommitResult] | None = None
    times_ms: Sequence[int] | None = None  # the entries' times, when their ids do not say


#: Told of each dead letter committed: (source, entry id, reason, error) (summary.py logs it).
DeadLetterSeen = Callable[[str, bytes, str, str], None]


class Batches:
    """Plans batches and commits them through ``backend``; counts them in ``count``."""

    def __init__(
        self,
        backend: Backend,
        metrics: Metrics,
        log: logging.Logger,
        on_progress: Callable[[], None],
        on_dead_letter: DeadLetterSeen | None = None,
    ) -> None:
        self.backend = backend
        self.on_dead_letter = on_dead_letter or (lambda source, entry_id, reason, error: None)
        self.metrics = metrics
        self.log = log
        self.on_progress = on_progress
        self.count = 0

    def plan(self, planner: Planner, batch: Batch) -> InFlight:
        """The plan of ``batch`` (pure: the core decides), ready to send."""
        started = time.perf_counter()
        now_ms = int(time.time() * 1000)
        source, entries, deliveries = batch.source, batch.entries, batch.deliveries
        plan = planner.plan_batch(source, entries, now_ms, deliveries)
        return InFlight(
            source, entries, deliveries, plan, planner, now_ms, started, times_ms=batch.times_ms
        )

    def send(self, batch: InFlight) -> InFlight:
        """Start the batch's commit (it runs to the end even if the router is stopped)."""
        batch.commit = self.backend.commit(batch.plan, batch.planner.table.settings.group)
        return batch

    async def finish(self, batch: InFlight) -> None:
        """Wait for the batch's commit; handle refused entries; account in metrics."""
        assert batch.commit is not None
        # Shielded: a stop request never interrupts a commit in flight.
        result = await asyncio.shield(batch.commit)
        source, entries, plan = batch.source, batch.entries, batch.plan
        self.metrics.consumed.labels(source).inc(len(entries))
        committed = plan.entries
        left: frozenset[bytes] = frozenset()
        if result.failed or result.skipped:
            left = result.skipped | result.failed.keys()
            committed = tuple(e for e in plan.entries if e.entry_id not in left)
        if result.skipped:
            # Acknowledged before this commit ran (another consumer reclaimed them while we
            # stalled, or a lost reply was re-run): nothing was written twice.
            self.log.warning(
                "entries_already_committed", source=source, entries=len(result.skipped)
            )
        stamps = entry_times(entries, batch.times_ms, left)
        for e in account(self.metrics, committed, batch.now_ms, stamps):
            self.on_dead_letter(source, e.entry_id, e.reason or "", e.error or "")
        self.metrics.batch.observe(time.perf_counter() - batch.started)
        self.count += 1
        self.on_progress()  # a long reclaim or drain is progress too (systemd watchdog)
        if result.failed:
            await self._handle_failed(batch, result)

    async def _handle_failed(self, batch: InFlight, result: CommitResult) -> None:
        """Entries a destination refused: retry after a backoff, or give up (``retry.py``).

        Only the refused entries count: each is left pending on its own, and its next
        attempt is a delivery Redis counts. Giving up writes the copies that can be
        written and one dead letter per refused destination, in one commit.
        """
        source, settings = batch.source, batch.planner.table.settings
        give_up: dict[bytes, dict[str, str]] = {}
        outage: str | None = None
        for entry_id, fields in batch.entries:
            if entry_id not in result.failed or fields is None:
                continue
            count = (batch.deliveries or {}).get(entry_id, 1)
            refused = result.refused.get(entry_id) or {"?": result.failed[entry_id]}
            judged = verdict(
                REFUSED,
                deliveries=count,
                max_deliveries=settings.max_deliveries,
                refusals=[classify_reply(e) for e in refused.values()],
                dead_letter_refused=settings.dead_letter in refused,
            )
            if judged.action == OUTAGE:
                outage = outage or result.failed[entry_id]
            elif judged.action == GIVE_UP:
                give_up[entry_id] = refused
            else:
                self.metrics.retried.labels(source).inc()
                self.backend.retry_later(source, entry_id, judged.delay_s)
        dead_lettered = await self._give_up(batch, give_up) if give_up else 0
        self.log.warning(
            "destination_refused",
            source=source,
            entries=len(result.failed),
            dead_lettered=dead_lettered,
            error=next(iter(result.failed.values())),
        )
        if outage is not None:
            raise Outage(outage)

    async def _give_up(self, batch: InFlight, refused_of: dict[bytes, dict[str, str]]) -> int:
        """Commit the give-up plans of ``refused_of`` (entry -> refused destinations); a
        destination that refuses now joins its entry's refused ones for another round."""
        source, planner = batch.source, batch.planner
        settings = planner.table.settings
        planned = {e.entry_id: e for e in batch.plan.entries}
        fields_of = dict(batch.entries)
        counts = batch.deliveries or {}
        dead = 0
        round = 0
        while refused_of:
            round += 1
            entries = tuple(
                plan_give_up(
                    planner,
                    source.encode(),
                    planned[eid],
                    fields_of[eid] or [],
                    refused,
                    counts.get(eid, 1),
                    batch.now_ms,
                )
                for eid, refused in refused_of.items()
            )
            again = await self.backend.commit(BatchPlan(source, entries), settings.group)
            left = again.skipped | again.failed.keys()
            done = [e for e in entries if e.entry_id not in left]
            left_out = {e[0] for e in batch.entries}.difference(e.entry_id for e in done)
            stamps = entry_times(batch.entries, batch.times_ms, left_out)
            account(self.metrics, done, batch.now_ms, stamps)
            for e in done:  # counted per event (account() counts the all-refused ones)
                letters = sum(1 for w in e.writes if w.stream == settings.dead_letter)
                if e.outcome != DEAD_LETTER and letters:
                    self.metrics.dead_lettered.labels("destination_error").inc()
                if letters:
                    error = "; ".join(f"{d}: {x}" for d, x in refused_of[e.entry_id].items())
                    self.on_dead_letter(source, e.entry_id, "destination_error", error)
                dead += letters
            refused_of = {
                eid: {**refused_of[eid], **again.refused.get(eid, {})} for eid in again.failed
            }
            for eid, refused in list(refused_of.items()):
                judged = verdict(
                    REGIVEN, dead_letter_refused=settings.dead_letter in refused, round=round
                )
                if judged.action == GIVE_UP:
                    continue  # another round, with the new refusers
                if settings.dead_letter in refused:  # nothing can be given up now
                    self.log.error(
                        "dead_letter_refused", source=source, error=refused[settings.dead_letter]
                    )
                self.backend.retry_later(source, eid, judged.delay_s)
                del refused_of[eid]
        return dead


def account(
    metrics: Metrics, entries: Sequence[EntryPlan], now_ms: int, stamps: Tally[int]
) -> list[EntryPlan]:
    """Count a committed batch: grouped per batch, so the cost is per distinct value;
    ``stamps``: how many of ``entries`` were added to the source at each millisecond
    (``backend.entry_times``), the start of their latency. Returns the dead-lettered
    entries (found only when the batch is not all routed)."""
    by_routes: Tally[tuple[tuple[str, str], ...]] = Tally(
        [e.routes for e in entries if e.outcome == ROUTED]
    )
    routed: Tally[tuple[str, str]] = Tally()
    for routes, n in by_routes.items():
        for pair in routes:
            routed[pair] += n
    for (dest, route), n in routed.items():
        metrics.routed.labels(route, dest).inc(n)
    dead_entries: list[EntryPlan] = []
    if by_routes.total() != len(entries):
        dead: Tally[str | None] = Tally()
        dropped: Tally[str] = Tally()
        for e in entries:
            if e.outcome == DEAD_LETTER:
                dead[e.reason] += 1
                dead_entries.append(e)
            elif e.outcome == DROPPED:
                dropped[e.reason or "policy"] += 1
            elif e.outcome == DELETED:
                dropped["deleted"] += 1
        for reason, n in dead.items():
            metrics.dead_lettered.labels(reason).inc(n)
        for reason, n in dropped.items():
            metrics.dropped.labels(reason).inc(n)
    for ms, n in stamps.items():
        observe_many(metrics.latency, max(0.0, (now_ms - ms) / 1000), n)
    return dead_entries
