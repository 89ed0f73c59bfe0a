"""The read loop: own pending first, then new entries; reclaim; back off; commit.

One ``Router`` consumes every source of the table with one consumer group. Each
turn of the loop reads up to ``batch`` entries per source with one blocking
XREADGROUP, hands each source's entries to the pure planner, and applies the
plan with one atomic commit (``commit.py``). Entries idle in any consumer's
pending list longer than ``claim_idle_ms`` are claimed with XAUTOCLAIM (cursor
followed to ``0-0``) and replanned with their delivery counts, read from the
pending list: attempt counts never live in this process's memory.

Redis errors never end the loop: connection errors and timeouts back off with
jitter and mark the router not ready; NOGROUP recreates the group per the
``start`` policy. Reads use their own connection with a read timeout longer than
the BLOCK time, so a half-open socket is noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections import Counter as Tally
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from synapse import log as logging
from synapse import membership, wire
from synapse.backoff import Backoff
from synapse.cluster import SlotReads, commit_cluster, connect_any, is_cluster_url
from synapse.commit import CommitResult, commit
from synapse.config import RoutingTable
from synapse.errors import ConsumerInUse
from synapse.matching import is_glob
from synapse.metrics import Metrics, observe_many
from synapse.plan import DEAD_LETTER, DELETED, DROPPED, ROUTED, BatchPlan, Entry, Planner

STATS_INTERVAL_S = 5.0
#: Longest stretch of read-ahead pipelining before the loop returns to its chores.
PIPELINE_MAX_S = 1.0
COMMIT_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 5.0


@dataclass(slots=True)
class _InFlight:
    """A planned batch and, once sent, its commit."""

    source: str
    entries: Sequence[Entry]
    deliveries: dict[bytes, int] | None
    plan: BatchPlan
    group: str
    now_ms: int
    started: float
    commit: asyncio.Future[CommitResult] | None = None


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
        self.reader = self._connect_reader(table)
        self.writer = connect(url, read_timeout_s=COMMIT_TIMEOUT_S, password=password)
        # Redis Cluster: one XREADGROUP per slot, and a per-slot commit (cluster.py).
        self.cluster = is_cluster_url(url)
        self._commit = commit_cluster if self.cluster else commit
        self._slot_reads = SlotReads()
        # Many routers: a lease on our consumer name; long-idle empty consumers forgotten.
        self.lease_ttl_ms = lease_ttl_ms
        self.lease = membership.ConsumerLease(table.settings.group, self.consumer, lease_ttl_ms)
        self.forget_idle_ms = forget_idle_ms
        self.failure: ConsumerInUse | None = None
        self._last_lease = 0.0
        self._last_forget = 0.0
        self.sources: list[str] = []
        self.ready = False
        self.stopping = asyncio.Event()
        self._next_table: RoutingTable | None = None
        self._needs_setup = True
        self._last_rescan = 0.0
        self._last_claim = 0.0
        self._last_stats = 0.0
        self.batches = 0

    def _connect_reader(self, table: RoutingTable) -> wire.Client:
        """The blocking-read client: its read timeout outlasts BLOCK by 5 s."""
        block_s = table.settings.block_ms / 1000
        return connect(self.url, read_timeout_s=block_s + 5.0, password=self.password)

    # -- control (called from the daemon) -------------------------------------------------

    def stop(self) -> None:
        """Stop reading; the batch in hand is finished and committed."""
        self.stopping.set()

    def swap_table(self, table: RoutingTable) -> None:
        """Use ``table`` from the next batch on (a batch finishes on the table it started)."""
        self._next_table = table

    async def close(self) -> None:
        await self._slot_reads.cancel()
        await self.reader.aclose()
        await self.writer.aclose()

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        attempt = 0
        while not self.stopping.is_set():
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
            except (RedisConnectionError, RedisTimeoutError, RedisClusterException, OSError) as exc:
                # RedisClusterException: no cluster node reachable (not a RedisError)
                attempt += 1
                self._down("connection", exc, attempt)
                await self._sleep(self.backoff.delay_s(attempt))
            except ResponseError as exc:
                attempt += 1
                if "NOGROUP" in str(exc):
                    self.metrics.redis_errors.labels("nogroup").inc()
                    self.log.warning(
                        "group_missing", error=str(exc), group=self.table.settings.group
                    )
                    self._needs_setup = True
                    await self._sleep(self.backoff.delay_s(attempt) if attempt > 1 else 0)
                else:
                    self._down("response", exc, attempt)
                    await self._sleep(self.backoff.delay_s(attempt))
            except Exception as exc:  # a bug must not stop routing for good: log, back off
                attempt += 1
                self.log.exception("router_error", error=repr(exc), attempt=attempt)
                self._down("internal", exc, attempt)
                await self._sleep(self.backoff.delay_s(attempt))
        await self._farewell()

    async def _farewell(self) -> None:
        """On a clean stop: leave the group if nothing is pending, free the name's lease."""
        await self._slot_reads.cancel()
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
        if old.settings.block_ms != table.settings.block_ms:
            # The read timeout must outlast the new BLOCK time: a new reader connection.
            await self._slot_reads.cancel()
            retired, self.reader = self.reader, self._connect_reader(table)
            await retired.aclose()
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
        await self._slot_reads.cancel()  # in-flight reads would race the pending drain
        await self.writer.ping()
        self.metrics.redis_up.set(1)
        await self._renew_lease()
        await self.discover(create=True)
        await self.drain_own_pending()
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
            await self.reclaim()
        if now - self._last_forget >= min(self.forget_idle_ms / 2, 60_000) / 1000:
            self._last_forget = now
            await self.forget_idle()
        if now - self._last_stats >= STATS_INTERVAL_S:
            self._last_stats = now
            await self.refresh_stats()
        self.on_progress()
        if not self.sources:
            await self._sleep(settings.block_ms / 1000)
            return
        reply = await (self._read_slots() if self.cluster else self._read_new())
        if reply is None:
            return
        await self._route(reply)

    def _read_args(self, block: bool) -> tuple[Any, ...]:
        s = self.table.settings
        wait = ("BLOCK", s.block_ms) if block else ()
        return (
            "XREADGROUP",
            "GROUP",
            s.group,
            self.consumer,
            "COUNT",
            s.batch,
            *wait,
            "STREAMS",
            *self.sources,
            *(">",) * len(self.sources),
        )

    async def _route(self, reply: Any) -> None:
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
                if self._read_ahead(reply) and time.monotonic() < deadline:
                    ahead = asyncio.ensure_future(
                        wire.execute(self.reader, *self._read_args(block=False))
                    )
                    await asyncio.sleep(0)  # on the wire before we plan, not after
                for stream, entries in reply:
                    if not entries:
                        continue
                    planned = self._plan(stream.decode(), entries, None)
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

    def _read_ahead(self, reply: Any) -> bool:
        """Whether a backlog is likely: a source filled its batch, and no stop or swap waits.

        Not on a cluster: its reads go per slot (``_read_slots``).
        """
        if self.cluster or self.stopping.is_set() or self._next_table is not None:
            return False
        batch = self.table.settings.batch
        return any(len(entries) >= batch for _, entries in reply)

    async def _read_new(self) -> Any:
        """XREADGROUP ... > on every source; cancelled promptly when stopping."""
        args = self._read_args(block=True)
        read = asyncio.ensure_future(wire.execute(self.reader, *args))
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not read.done():
            # Stopping while blocked: entries the server may have handed us stay in our
            # pending list and are reclaimed (never lost).
            read.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await read
            return None
        return read.result()

    async def _read_slots(self) -> Any:
        """On a cluster: one blocking XREADGROUP per hash slot, the first answers taken."""
        s = self.table.settings
        args = (
            "XREADGROUP",
            "GROUP",
            s.group,
            self.consumer,
            "COUNT",
            s.batch,
            "BLOCK",
            s.block_ms,
        )
        return await self._slot_reads.next(self.reader, args, self.sources, self.stopping)

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

    # -- one batch -------------------------------------------------------------------------

    async def process(
        self, source: str, entries: Sequence[Entry], deliveries: dict[bytes, int] | None
    ) -> None:
        """Plan one source's entries and commit them; account in metrics."""
        if not entries:
            return
        await self._finish(self._send(self._plan(source, entries, deliveries)))

    def _plan(
        self, source: str, entries: Sequence[Entry], deliveries: dict[bytes, int] | None
    ) -> _InFlight:
        started = time.perf_counter()
        now_ms = int(time.time() * 1000)
        plan = self.planner.plan_batch(source, entries, now_ms, deliveries)
        return _InFlight(
            source, entries, deliveries, plan, self.table.settings.group, now_ms, started
        )

    def _send(self, batch: _InFlight) -> _InFlight:
        """Start the batch's commit (it runs to the end even if the router is stopped)."""
        batch.commit = asyncio.ensure_future(self._commit(self.writer, batch.plan, batch.group))
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
            await self._handle_failed(
                source, entries, batch.deliveries, result.failed, batch.now_ms
            )
        self._account(committed, batch.now_ms)
        self.metrics.batch.observe(time.perf_counter() - batch.started)
        self.batches += 1
        self.on_progress()  # a long reclaim or drain is progress too (systemd watchdog)

    async def _handle_failed(
        self,
        source: str,
        entries: Sequence[Entry],
        deliveries: dict[bytes, int] | None,
        failed: dict[bytes, str],
        now_ms: int,
    ) -> None:
        """Entries whose destination refused: dead-letter at the limit, else leave pending."""
        limit = self.table.settings.max_deliveries
        src = source.encode()
        give_up = []
        for entry_id, fields in entries:
            if entry_id not in failed or fields is None:
                continue
            count = (deliveries or {}).get(entry_id, 1)
            if count >= limit:
                give_up.append(
                    self.planner.dead_letter(
                        src, entry_id, fields, "destination_error", failed[entry_id], count, now_ms
                    )
                )
            else:
                self.metrics.retried.labels(source).inc()
        if give_up:
            again = await self._commit(
                self.writer, BatchPlan(source, tuple(give_up)), self.table.settings.group
            )
            left = again.skipped | again.failed.keys()
            self._account(tuple(e for e in give_up if e.entry_id not in left), now_ms)
        self.log.warning(
            "destination_refused",
            source=source,
            entries=len(failed),
            dead_lettered=len(give_up),
            error=next(iter(failed.values())),
        )

    def _account(self, entries: Sequence[Any], now_ms: int) -> None:
        """Count a committed batch: grouped per batch, so the cost is per distinct value."""
        metrics = self.metrics
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

    # -- sources, groups, pending ----------------------------------------------------------

    def _excluded(self) -> frozenset[str]:
        return self.table.destinations | {self.table.settings.dead_letter}

    async def discover(self, create: bool) -> None:
        """Resolve source names and globs to streams; create missing groups."""
        self._last_rescan = time.monotonic()
        excluded = self._excluded()
        found: list[str] = []
        for pattern in self.table.sources:
            if not is_glob(pattern):
                found.append(pattern)
                continue
            async for key in self.writer.scan_iter(match=pattern, count=1000, _type="stream"):
                name = key.decode("utf-8", "replace")
                if name not in excluded:
                    found.append(name)
        found = list(dict.fromkeys(found))
        new = [s for s in found if s not in self.sources]
        if create:
            new = found
        literal = {p for p in self.table.sources if not is_glob(p)}
        for source in new:
            await self.ensure_group(source, mkstream=source in literal)
        if new and not create:
            self.log.info("sources_added", sources=new)
        gone = [s for s in self.sources if s not in found]
        if gone:
            self.log.info("sources_removed", sources=gone)
        self.sources = found
        self.metrics.sources.set(len(found))

    async def ensure_group(self, source: str, mkstream: bool) -> None:
        s = self.table.settings
        start = "0" if s.start == "earliest" else "$"
        args: list[Any] = ["XGROUP", "CREATE", source, s.group, start]
        if mkstream:
            args.append("MKSTREAM")
        try:
            await wire.execute(self.writer, *args)
        except ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return
            if "requires the key to exist" in str(exc):
                return  # a globbed stream deleted since the scan
            raise
        self.metrics.group_recreated.labels(source).inc()
        self.log.info("group_created", source=source, group=s.group, start=s.start)

    async def drain_own_pending(self) -> None:
        """Re-process entries already delivered to this consumer name (after a restart)."""
        group = self.table.settings.group
        for source in self.sources:
            last = b"0"
            while not self.stopping.is_set():
                reply = await wire.execute(
                    self.writer,
                    "XREADGROUP",
                    "GROUP",
                    group,
                    self.consumer,
                    "COUNT",
                    self.table.settings.batch,
                    "STREAMS",
                    source,
                    last,
                )
                entries = reply[0][1] if reply else []
                if not entries:
                    break
                last = entries[-1][0]
                counts = await self.delivery_counts(source, entries)
                await self.process(source, entries, counts)

    async def delivery_counts(self, source: str, entries: Sequence[Entry]) -> dict[bytes, int]:
        """Delivery counts of ``entries`` from the group's pending list.

        Pages through our pending entries between the lowest and highest id, so
        other pending entries of ours in that range never hide a count.
        """
        wanted = {e[0] for e in entries}
        counts: dict[bytes, int] = {}
        start: bytes = min(wanted, key=_id_key)
        end: bytes = max(wanted, key=_id_key)
        page = max(len(wanted), 100)
        while True:
            reply = await wire.execute(
                self.writer,
                "XPENDING",
                source,
                self.table.settings.group,
                start,
                end,
                page,
                self.consumer,
            )
            for row in reply:
                if row[0] in wanted:
                    counts[row[0]] = int(row[3])
            if len(reply) < page or len(counts) == len(wanted):
                return counts
            start = b"(" + reply[-1][0]

    async def reclaim(self) -> None:
        """Claim entries idle longer than claim_idle_ms from any consumer (ourselves too)."""
        s = self.table.settings
        for source in self.sources:
            cursor = b"0-0"
            while not self.stopping.is_set():
                reply = await wire.execute(
                    self.writer,
                    "XAUTOCLAIM",
                    source,
                    s.group,
                    self.consumer,
                    s.claim_idle_ms,
                    cursor,
                    "COUNT",
                    s.batch,
                )
                cursor, claimed = reply[0], reply[1]
                deleted = reply[2] if len(reply) > 2 else []
                if deleted:
                    # Trimmed or deleted before they were processed: acknowledge, count.
                    await wire.execute(self.writer, "XACK", source, s.group, *deleted)
                    self.metrics.dropped.labels("deleted").inc(len(deleted))
                    self.log.warning("pending_entries_deleted", source=source, count=len(deleted))
                live = [e for e in claimed if e[1] is not None]
                if live:
                    self.metrics.reclaimed.inc(len(live))
                    counts = await self.delivery_counts(source, live)
                    await self.process(source, live, counts)
                if cursor == b"0-0":
                    break

    async def refresh_stats(self) -> None:
        """Per-source lag and pending from XINFO GROUPS (on an interval, not per batch)."""
        group = self.table.settings.group.encode()
        for source in self.sources:
            try:
                groups = await self.writer.xinfo_groups(source)
            except ResponseError:
                continue
            for info in groups:
                if info.get("name") == group:
                    self.metrics.pending.labels(source).set(info.get("pending") or 0)
                    lag = info.get("lag")
                    if lag is not None:
                        self.metrics.lag.labels(source).set(lag)


def _id_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)
