"""The subscriber loop: the router's consumer loop, handing entries to handlers.

One ``Subscriber`` per process serves every subscription of a service: one
consumer (this process) in the service's group on each subscribed stream and on
the service's retry stream. The I/O is ``RedisStreams`` (the router's own read,
pending and group machinery); this module decides what happens to each entry:

- own pending entries first (after a start or a Redis error), then new ones; idle
  entries of dead instances are claimed every ``claim_idle_ms / 2``;
- an entry no subscription wants is acknowledged and skipped; one that is not a
  valid event is dead-lettered with the router's reason code;
- with ``dedupe_s``, an event marked as handled is acknowledged unseen;
- a handler that returns: acknowledged (and marked, with ``dedupe_s``, atomically);
  one that raises: tried again after a capped backoff (XCLAIM counts the delivery
  on the server), dead-lettered with ``handler_error`` at ``max_deliveries``;
- an entry delivered more than ``max_deliveries`` times without an outcome (its
  handler kills the process) is dead-lettered with ``max_deliveries``.

Each subscription has ``concurrency`` workers fed by a bounded queue, so a read
waits when handlers are busy and memory stays flat. Redis errors never end the
loop: back off with jitter, then set up again (recreating lost groups).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from synapse import keys
from synapse.backoff import Backoff
from synapse.client import tracing
from synapse.client.acks import Outcome
from synapse.client.event import Event, decode
from synapse.client.redis_io import RedisStreams
from synapse.client.subscription import Subscription, route, route_any
from synapse.errors import InvalidEvent
from synapse.events import dead_letter_fields
from synapse.plan import Entry

FORGET_IDLE_MS = 3_600_000
#: Retries start at this many seconds, doubling up to the subscription's retry_backoff_s.
RETRY_BASE_S = 0.1
#: (stream, type) -> subscription decisions kept (types are few; cleared when full).
ROUTE_CACHE_MAX = 10_000
#: Longest stretch of read-ahead before the loop returns to its chores (the router's).
PIPELINE_MAX_S = 1.0
FAILURES = (RedisConnectionError, RedisTimeoutError, RedisClusterException, OSError)


class Subscriber:
    """Reads the service's streams and runs each entry's handler; ``stop`` drains."""

    def __init__(
        self,
        service: str,
        subscriptions: Sequence[Subscription],
        io_factory: Any,
        *,
        dead_letter: str,
        log: Any,
        backoff: Backoff | None = None,
        drain_timeout_s: float = 30.0,
    ) -> None:
        self.service = service
        self.subscriptions = list(subscriptions)
        self.dead_letter = dead_letter
        self.retry_stream = keys.retry_stream(service)
        self.log = log
        self.backoff = backoff or Backoff()
        self.drain_timeout_s = drain_timeout_s
        self.stopping = asyncio.Event()
        self._flusher_done = asyncio.Event()  # set once handlers are done: flush, then end
        self.io: RedisStreams = io_factory(self.process, self.stopping)
        self.ready = False
        self.handled = 0
        self.failed = 0
        self.dead_lettered = 0
        self.skipped = 0
        self.deduped = 0
        self._tracing = False
        self._retries: set[asyncio.Task[None]] = set()
        #: Our entries waiting to be tried again, by (stream, id): the task that will.
        self._retrying: dict[tuple[str, bytes], asyncio.Task[None]] = {}
        self._routes: dict[tuple[str, str], int] = {}
        #: Per subscription: no dedupe (its entries go straight to a lane).
        self._plain = [s.dedupe_s is None for s in self.subscriptions]
        self._handling: dict[str, asyncio.Future[bool]] = {}
        self._threads: ThreadPoolExecutor | None = None
        self._claim_idle_ms = min(s.claim_idle_ms for s in self.subscriptions)
        self._claim_every_s = self._claim_idle_ms / 1000 / 2
        #: Batches whose handlers are running, by stream: kept ours while they run.
        self._holding: list[tuple[str, list[bytes]]] = []

    def stop(self) -> None:
        """Stop reading; handlers in flight finish, their outcomes are written."""
        self.stopping.set()

    # -- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Until ``stop``: read, dispatch, back off on Redis errors; then drain and close."""
        if any(not s.is_async for s in self.subscriptions):
            workers = sum(s.concurrency for s in self.subscriptions if not s.is_async)
            self._threads = ThreadPoolExecutor(workers, thread_name_prefix="synapse-handler")
        flusher = asyncio.create_task(self.io.acks.run(self._flusher_done))
        keeper = asyncio.create_task(self._keep_held())
        reading = asyncio.create_task(self._loop())
        try:
            await self._until_stopped(reading)
        finally:
            reading.cancel()
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            self._flusher_done.set()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(flusher, self.drain_timeout_s)
            with contextlib.suppress(Exception):
                if self.io.acks.backlog == 0:
                    await self.io.farewell()
            await self.io.close()
            if self._threads is not None:
                self._threads.shutdown(wait=False)
            self.log.info(
                "subscriber_stopped", handled=self.handled, failed=self.failed,
                dead_lettered=self.dead_lettered,
            )  # fmt: skip

    async def _until_stopped(self, reading: asyncio.Task[None]) -> None:
        """Wait for a stop; then give the handlers in flight ``drain_timeout_s`` to finish."""
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({reading, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        busy = {reading, *self._retries}
        _, late = await asyncio.wait(busy, timeout=self.drain_timeout_s)
        if late:
            self.log.warning("handlers_unfinished", tasks=len(late))
            for task in late:
                task.cancel()

    async def _loop(self) -> None:
        attempt = 0
        needs_setup = True
        last_claim = last_forget = time.monotonic()
        while not self.stopping.is_set():
            try:
                if needs_setup:
                    await self.io.setup()
                    needs_setup = False
                    if not self.ready:
                        self.log.info("subscriber_ready", streams=self.io.streams)
                    self.ready = True
                now = time.monotonic()
                if now - last_claim >= self._claim_every_s:
                    last_claim = now
                    await self.io.reclaim()
                if now - last_forget >= 60.0:
                    last_forget = now
                    await self.io.forget_idle(FORGET_IDLE_MS)
                await self._read_and_handle()
                attempt = 0
            except FAILURES as exc:
                attempt += 1
                needs_setup = True
                self._down("connection", exc, attempt)
                await self._sleep(self.backoff.delay_s(attempt))
            except ResponseError as exc:
                attempt += 1
                needs_setup = True
                if "NOGROUP" in str(exc):
                    self.log.warning("group_missing", error=str(exc), group=self.service)
                    await self._sleep(self.backoff.delay_s(attempt) if attempt > 1 else 0)
                else:
                    self._down("response", exc, attempt)
                    await self._sleep(self.backoff.delay_s(attempt))
            except Exception as exc:  # a bug must not stop the service for good
                attempt += 1
                needs_setup = True
                self.log.exception("subscriber_error", error=repr(exc), attempt=attempt)
                await self._sleep(self.backoff.delay_s(attempt))

    async def _read_and_handle(self) -> None:
        """One blocking read and its handlers; with a backlog, the next read is sent first.

        Read-ahead (the router's ``Reads.ahead``) overlaps the server's next read with
        this batch's handlers, for at most ``PIPELINE_MAX_S`` before the chores run
        again. Entries read ahead but not handled (an error, a stop) stay pending and
        are handled at the next set-up or start.
        """
        reply = await self.io.read()
        deadline = time.monotonic() + PIPELINE_MAX_S
        ahead: asyncio.Future[Any] | None = None
        try:
            while reply:
                if not self.stopping.is_set() and time.monotonic() < deadline:
                    ahead = self.io.read_ahead(reply)
                for stream, entries in reply:
                    await self.process(stream.decode(), entries, None)
                if ahead is None:
                    return
                reply, ahead = await ahead, None
        finally:
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await ahead

    async def _keep_held(self) -> None:
        """Keep entries whose handlers are slow (or waiting to retry) ours.

        Every ``claim_idle_ms / 3``, the entries of the batches in hand and those waiting
        to be tried again are claimed again without a delivery (XCLAIM JUSTID), but only
        those idle that long: another instance never reclaims an entry this live one
        still holds, and one another instance took meanwhile is left to it.
        """
        every_s = self._claim_idle_ms / 1000 / 3
        while True:
            await asyncio.sleep(every_s)
            held: dict[str, list[bytes]] = {}
            for stream, ids in self._holding:
                held.setdefault(stream, []).extend(ids)
            for stream, entry_id in self._retrying:
                held.setdefault(stream, []).append(entry_id)
            for stream, ids in held.items():
                with contextlib.suppress(*FAILURES, ResponseError):
                    await self.io.keep(stream, ids, self._claim_idle_ms // 3)

    def _down(self, kind: str, exc: BaseException, attempt: int) -> None:
        if self.ready or attempt == 1:
            self.log.warning("redis_unavailable", kind=kind, error=str(exc), attempt=attempt)
        self.ready = False

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    # -- dispatch -------------------------------------------------------------------------

    async def process(
        self, stream: str, entries: Sequence[Entry], deliveries: dict[bytes, int] | None
    ) -> None:
        """Run the handlers of one stream's entries; return when every one has an outcome."""
        await self._dispatch(stream, entries, deliveries or {}, skip_retrying=True)

    async def _dispatch(
        self,
        stream: str,
        entries: Sequence[Entry],
        counts: dict[bytes, int],
        *,
        skip_retrying: bool,
    ) -> None:
        subs = self.subscriptions
        batches: list[list[tuple[Event, bytes]]] = [[] for _ in subs]
        once: list[tuple[int, Event, bytes]] = []
        retrying = self._retrying if skip_retrying else None
        routes = self._routes
        plain = self._plain
        for entry_id, fields in entries:
            if retrying and (stream, entry_id) in retrying:
                continue  # ours, waiting to be tried again: seen again by a drain or reclaim
            deliveries = counts.get(entry_id, 1) if counts else 1
            if fields is not None and deliveries == 1:
                # The common case inline: decode, route (cached), queue for its lane.
                try:
                    event = decode(stream, entry_id, fields)
                except InvalidEvent as exc:
                    self._dead(stream, entry_id, fields, exc.reason, exc.detail, 1)
                    continue
                index = routes.get((stream, event.type))
                if index is None:
                    index = self._route(stream, event.type)
                if index >= 0 and plain[index]:
                    batches[index].append((event, entry_id))
                    continue
                picked: tuple[int, Event] | None = (index, event) if index >= 0 else None
                if picked is None:
                    self.skipped += 1
                    self.io.acks.ack(stream, entry_id)
            else:
                picked = self._pick(stream, entry_id, fields, deliveries)
            if picked is not None:
                index, event = picked
                if subs[index].dedupe_s is None:
                    batches[index].append((event, entry_id))
                else:
                    once.append((index, event, entry_id))
        if once:
            marks = [keys.dedupe_mark(self.service, e.dedupe_key) for _, e, _ in once]
            for (index, event, entry_id), marked in zip(
                once, await self.io.marked(marks), strict=True
            ):
                if marked:
                    self.deduped += 1
                    self.io.acks.ack(stream, entry_id)
                else:
                    batches[index].append((event, entry_id))
        self._tracing = tracing.active()
        runs = [self._lanes(subs[i], items) for i, items in enumerate(batches) if items]
        if not runs:
            return
        held = (stream, [entry_id for items in batches for _, entry_id in items])
        self._holding.append(held)
        try:
            if len(runs) == 1:
                await runs[0]
            else:
                await asyncio.gather(*runs)
        finally:
            self._holding.remove(held)

    async def _lanes(self, sub: Subscription, items: list[tuple[Event, bytes]]) -> None:
        """Handle ``items`` with at most ``sub.concurrency`` handlers in flight."""
        pending = iter(items)

        async def lane() -> None:
            for event, entry_id in pending:
                try:
                    await self._handle(sub, event, entry_id)
                except Exception as exc:  # a bug here must not drop the rest of the batch
                    self.log.exception("handler_dispatch_error", error=repr(exc))

        lanes = min(sub.concurrency, len(items))
        if lanes <= 1:
            await lane()
            return
        # One lane first: a handler that never waits runs the whole batch in it. The
        # other lanes start only if items are left once the first lane has yielded.
        first = asyncio.ensure_future(lane())
        await asyncio.sleep(0)
        if first.done():
            first.result()
            return
        await asyncio.gather(first, *(lane() for _ in range(lanes - 1)))

    def _pick(
        self, stream: str, entry_id: bytes, fields: list[bytes] | None, deliveries: int
    ) -> tuple[int, Event] | None:
        """The subscription (its index) and event for one entry, or None when settled here."""
        if fields is None:  # deleted while pending
            self.io.acks.ack(stream, entry_id)
            return None
        try:
            event = decode(stream, entry_id, fields, deliveries=deliveries)
        except InvalidEvent as exc:
            self._dead(stream, entry_id, fields, exc.reason, exc.detail, deliveries)
            return None
        index = self._route(stream, event.type)
        if index < 0:
            self.skipped += 1
            self.io.acks.ack(stream, entry_id)
            return None
        sub = self.subscriptions[index]
        if deliveries > sub.max_deliveries:
            error = (
                f"delivered {deliveries} times without an outcome "
                f"(max_deliveries={sub.max_deliveries})"
            )
            self._dead(stream, entry_id, fields, "max_deliveries", error, deliveries)
            return None
        return index, event

    def _route(self, stream: str, event_type: str) -> int:
        """The index of the subscription for (stream, type), -1 for none (cached, bounded)."""
        key = (stream, event_type)
        found = self._routes.get(key)
        if found is None:
            if stream == self.retry_stream:
                sub = route_any(self.subscriptions, event_type)
            else:
                sub = route(self.subscriptions, stream, event_type)
            found = -1 if sub is None else self.subscriptions.index(sub)
            if len(self._routes) >= ROUTE_CACHE_MAX:
                self._routes.clear()
            self._routes[key] = found
        return found

    def _dead(
        self,
        stream: str,
        entry_id: bytes,
        fields: list[bytes],
        reason: str,
        error: str,
        deliveries: int,
    ) -> None:
        letter = dead_letter_fields(
            fields,
            reason=reason,
            error=error,
            source=stream.encode(),
            entry_id=entry_id,
            deliveries=deliveries,
            config_hash="",
            now_ms=int(time.time() * 1000),
        )
        letter += (keys.F_CONSUMER, self.service.encode())
        self.dead_lettered += 1
        self.io.acks.add(Outcome(stream, entry_id, dead=(self.dead_letter, letter)))
        self.log.warning(
            "event_dead_lettered", stream=stream, entry_id=entry_id.decode(), reason=reason,
            error=error, deliveries=deliveries,
        )  # fmt: skip

    # -- handlers -------------------------------------------------------------------------

    async def _handle(self, sub: Subscription, event: Event, entry_id: bytes) -> None:
        if sub.dedupe_s is None and sub.is_async and sub.model is None and not self._tracing:
            try:  # the plain case, inline: no span, no model, nothing to mark
                await sub.handler(event)
            except Exception as exc:
                await self._failed(sub, event, entry_id, self._report(sub, event, exc, None))
                return
            self.handled += 1
            self.io.acks.ack(event.stream, entry_id)
            return
        if sub.dedupe_s is not None:
            await self._handle_once(sub, event, entry_id, sub.dedupe_s)
            return
        error = await self._call(sub, event)
        if error is not None:
            await self._failed(sub, event, entry_id, error)
            return
        self.handled += 1
        self.io.acks.ack(event.stream, entry_id)

    async def _handle_once(
        self, sub: Subscription, event: Event, entry_id: bytes, dedupe_s: float
    ) -> None:
        """With ``dedupe_s``: a copy handled meanwhile is acked; success writes the mark."""
        stream, key = event.stream, event.dedupe_key
        other = self._handling.get(key)
        if other is not None and await asyncio.shield(other):
            self.deduped += 1  # a copy of the same event was handled meanwhile
            self.io.acks.ack(stream, entry_id)
            return
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._handling[key] = done
        error: str | None = "cancelled"
        try:
            error = await self._call(sub, event)
        finally:
            done.set_result(error is None)
            if self._handling.get(key) is done:
                del self._handling[key]
        if error is not None:
            await self._failed(sub, event, entry_id, error)
            return
        self.handled += 1
        # The mark is written before this lane takes another entry: a kill can repeat
        # at most the `concurrency` handlers whose marks were in flight.
        mark = (keys.dedupe_mark(self.service, key), int(dedupe_s * 1000))
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.io.acks.add(Outcome(stream, entry_id, mark=mark, written=written))
        await written

    async def _failed(self, sub: Subscription, event: Event, entry_id: bytes, error: str) -> None:
        """Retry after a backoff, or dead-letter at ``max_deliveries``."""
        self.failed += 1
        stream = event.stream
        if event.deliveries >= sub.max_deliveries:
            fields = list(event.fields)
            self._dead(stream, entry_id, fields, "handler_error", error, event.deliveries)
            return
        task = asyncio.create_task(self._retry(sub, event, entry_id))
        self._retrying[(stream, entry_id)] = task
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _call(self, sub: Subscription, event: Event) -> str | None:
        """Run the handler; None when it returned, else the exception's last line."""
        if not self._tracing:
            return await self._run_handler(sub, event, None)
        attributes = {
            "messaging.system": "synapse",
            "messaging.destination.name": event.stream,
            "messaging.message.id": event.id or event.entry_id,
            "messaging.consumer.group.name": self.service,
            "synapse.event.type": event.type,
            "synapse.deliveries": event.deliveries,
        }
        traceparent = event.get_field("traceparent")
        with tracing.handler_span(f"handle {event.type}", traceparent, attributes) as span:
            return await self._run_handler(sub, event, span)

    async def _run_handler(self, sub: Subscription, event: Event, span: Any) -> str | None:
        try:
            arg: Any = event
            if sub.model is not None:
                parse = getattr(sub.model, "from_event", None)
                arg = parse(event) if parse else sub.model.model_validate(event.data)
            if sub.is_async:
                await sub.handler(arg)
            else:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._threads, sub.handler, arg)
        except Exception as exc:
            return self._report(sub, event, exc, span)
        return None

    def _report(self, sub: Subscription, event: Event, exc: Exception, span: Any) -> str:
        """Log a handler's failure; its text: the traceback's last line ("ValueError: ...")."""
        last = "".join(traceback.format_exception_only(exc)).strip()
        if span is not None:
            span.record_exception(exc)
        self.log.warning(
            "handler_failed", handler=sub.name, stream=event.stream, type=event.type,
            entry_id=event.entry_id, deliveries=event.deliveries, error=last,
        )  # fmt: skip
        return last

    async def _retry(self, sub: Subscription, event: Event, entry_id: bytes) -> None:
        """After a capped backoff, deliver the entry again (the server counts it)."""
        key = (event.stream, entry_id)
        try:
            policy = Backoff(
                base_s=min(RETRY_BASE_S, sub.retry_backoff_s), cap_s=sub.retry_backoff_s
            )
            await self._sleep(policy.delay_s(event.deliveries))
            if self.stopping.is_set():
                return  # left pending: this service's next instance (or a reclaim) takes it
            for attempt in range(1, 6):
                try:
                    entry, count = await self.io.claim_again(event.stream, entry_id)
                except (*FAILURES, ResponseError):
                    await self._sleep(self.backoff.delay_s(attempt))
                    continue
                if entry is not None:
                    counts = {entry_id: count}
                    await self._dispatch(event.stream, [entry], counts, skip_retrying=False)
                return
            # Redis stayed away: the entry stays pending; the next set-up re-reads it.
        except Exception as exc:  # the entry stays pending: the next reclaim takes it
            self.log.exception("retry_failed", stream=event.stream, error=repr(exc))
        finally:
            if self._retrying.get(key) is asyncio.current_task():
                del self._retrying[key]
