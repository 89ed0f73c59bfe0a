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
FAILURES = (RedisConnectionError, RedisTimeoutError, RedisClusterException, OSError)
#: A subscription's queue: (event, entry id), or None to stop a worker.
Queue = asyncio.Queue[tuple[Event, bytes] | None]


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
        self._flusher_done = asyncio.Event()  # set once the workers are done: flush, then end
        self.io: RedisStreams = io_factory(self.process, self.stopping)
        self.ready = False
        self.handled = 0
        self.failed = 0
        self.dead_lettered = 0
        self.skipped = 0
        self.deduped = 0
        self._queues: dict[int, Queue] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._retries: set[asyncio.Task[None]] = set()
        self._inflight: set[tuple[str, bytes]] = set()
        self._handling: dict[str, asyncio.Future[bool]] = {}
        self._threads: ThreadPoolExecutor | None = None
        self._claim_every_s = min(s.claim_idle_ms for s in self.subscriptions) / 1000 / 2

    def stop(self) -> None:
        """Stop reading; handlers in flight (and queued) finish, their outcomes are written."""
        self.stopping.set()

    # -- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Until ``stop``: read, dispatch, back off on Redis errors; then drain and close."""
        if any(not s.is_async for s in self.subscriptions):
            workers = sum(s.concurrency for s in self.subscriptions if not s.is_async)
            self._threads = ThreadPoolExecutor(workers, thread_name_prefix="synapse-handler")
        for index, sub in enumerate(self.subscriptions):
            queue: Queue = asyncio.Queue(sub.concurrency)
            self._queues[index] = queue
            self._workers += [
                asyncio.create_task(self._work(sub, queue)) for _ in range(sub.concurrency)
            ]
        flusher = asyncio.create_task(self.io.acks.run(self._flusher_done))
        try:
            await self._loop()
        finally:
            await self._drain()
            self._flusher_done.set()
            with contextlib.suppress(asyncio.CancelledError):
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
                reply = await self.io.read()
                if reply:
                    for stream, entries in reply:
                        await self.process(stream.decode(), entries, None)
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

    def _down(self, kind: str, exc: BaseException, attempt: int) -> None:
        if self.ready or attempt == 1:
            self.log.warning("redis_unavailable", kind=kind, error=str(exc), attempt=attempt)
        self.ready = False

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _drain(self) -> None:
        """Let the workers finish what is queued and in flight, within the drain deadline."""
        for task in self._retries:
            task.cancel()  # their entries stay pending: reclaimed, never lost
        for index, sub in enumerate(self.subscriptions):
            for _ in range(sub.concurrency):
                await self._queues[index].put(None)
        if self._workers:
            _, late = await asyncio.wait(self._workers, timeout=self.drain_timeout_s)
            for task in late:
                task.cancel()
            if late:
                self.log.warning("handlers_unfinished", count=len(late))

    # -- dispatch -------------------------------------------------------------------------

    async def process(
        self, stream: str, entries: Sequence[Entry], deliveries: dict[bytes, int] | None
    ) -> None:
        """Hand one stream's entries to their subscriptions' queues (waits when full)."""
        ready: list[tuple[Subscription, Event, bytes]] = []
        for entry_id, fields in entries:
            if (stream, entry_id) in self._inflight:
                continue  # ours already (queued or running): a drain or reclaim saw it again
            count = (deliveries or {}).get(entry_id, 1)
            picked = self._pick(stream, entry_id, fields, count)
            if picked is not None:
                ready.append((*picked, entry_id))
        marks = [
            keys.dedupe_mark(self.service, event.dedupe_key)
            for sub, event, _ in ready
            if sub.dedupe_s is not None
        ]
        seen = iter(await self.io.marked(marks))
        for sub, event, entry_id in ready:
            if sub.dedupe_s is not None and next(seen):
                self.deduped += 1
                self.io.acks.add(Outcome(stream, entry_id))
                continue
            self._inflight.add((stream, entry_id))
            await self._queues[self.subscriptions.index(sub)].put((event, entry_id))

    def _pick(
        self, stream: str, entry_id: bytes, fields: list[bytes] | None, deliveries: int
    ) -> tuple[Subscription, Event] | None:
        """The subscription and event for one entry, or None when settled here."""
        if fields is None:  # deleted while pending
            self.io.acks.add(Outcome(stream, entry_id))
            return None
        try:
            event = decode(stream, entry_id, fields, deliveries=deliveries)
        except InvalidEvent as exc:
            self._dead(stream, entry_id, fields, exc.reason, exc.detail, deliveries)
            return None
        if stream == self.retry_stream:
            sub = route_any(self.subscriptions, event.type)
        else:
            sub = route(self.subscriptions, stream, event.type)
        if sub is None:
            self.skipped += 1
            self.io.acks.add(Outcome(stream, entry_id))
            return None
        if deliveries > sub.max_deliveries:
            error = (
                f"delivered {deliveries} times without an outcome "
                f"(max_deliveries={sub.max_deliveries})"
            )
            self._dead(stream, entry_id, fields, "max_deliveries", error, deliveries)
            return None
        return sub, event

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

    async def _work(
        self, sub: Subscription, queue: asyncio.Queue[tuple[Event, bytes] | None]
    ) -> None:
        while True:
            item = await queue.get()
            if item is None:
                return
            event, entry_id = item
            try:
                await self._handle(sub, event, entry_id)
            except Exception as exc:  # a bug here must not kill the worker
                self.log.exception("handler_dispatch_error", error=repr(exc))
                self._inflight.discard((event.stream, entry_id))

    async def _handle(self, sub: Subscription, event: Event, entry_id: bytes) -> None:
        stream = event.stream
        key = event.dedupe_key if sub.dedupe_s is not None else None
        if key is not None:
            other = self._handling.get(key)
            if other is not None and await asyncio.shield(other):
                self.deduped += 1  # a copy of the same event was handled meanwhile
                self._finish(stream, entry_id, Outcome(stream, entry_id))
                return
        done: asyncio.Future[bool] | None = None
        if key is not None:
            done = self._handling[key] = asyncio.get_running_loop().create_future()
        ok = False
        try:
            error = await self._call(sub, event)
            ok = error is None
        finally:
            if done is not None and key is not None:
                done.set_result(ok)
                if self._handling.get(key) is done:
                    del self._handling[key]
        if error is None:
            self.handled += 1
            mark = None
            if key is not None and sub.dedupe_s is not None:
                mark = (keys.dedupe_mark(self.service, key), int(sub.dedupe_s * 1000))
            self._finish(stream, entry_id, Outcome(stream, entry_id, mark=mark))
            return
        self.failed += 1
        if event.deliveries >= sub.max_deliveries:
            self._inflight.discard((stream, entry_id))
            self._dead(
                stream, entry_id, list(event.fields), "handler_error", error, event.deliveries
            )
            return
        task = asyncio.create_task(self._retry(sub, event, entry_id))
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    def _finish(self, stream: str, entry_id: bytes, outcome: Outcome) -> None:
        self._inflight.discard((stream, entry_id))
        self.io.acks.add(outcome)

    async def _call(self, sub: Subscription, event: Event) -> str | None:
        """Run the handler; None when it returned, else the exception's last line."""
        attributes = {
            "messaging.system": "synapse",
            "messaging.destination.name": event.stream,
            "messaging.message.id": event.id or event.entry_id,
            "messaging.consumer.group.name": self.service,
            "synapse.event.type": event.type,
            "synapse.deliveries": event.deliveries,
        }
        traceparent = event.get_field("traceparent") if tracing.ENABLED else None
        with tracing.handler_span(f"handle {event.type}", traceparent, attributes) as span:
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
                # the traceback's last line: "ValueError: message"
                last = "".join(traceback.format_exception_only(exc)).strip()
                if span is not None:
                    span.record_exception(exc)
                self.log.warning(
                    "handler_failed", handler=sub.name, stream=event.stream, type=event.type,
                    entry_id=event.entry_id, deliveries=event.deliveries, error=last,
                )  # fmt: skip
                return last
        return None

    async def _retry(self, sub: Subscription, event: Event, entry_id: bytes) -> None:
        """After a capped backoff, deliver the entry again (the server counts it)."""
        policy = Backoff(base_s=min(RETRY_BASE_S, sub.retry_backoff_s), cap_s=sub.retry_backoff_s)
        await asyncio.sleep(policy.delay_s(event.deliveries))
        stream = event.stream
        self._inflight.discard((stream, entry_id))
        for attempt in range(1, 6):
            try:
                entry, count = await self.io.claim_again(stream, entry_id)
            except (
                RedisConnectionError,
                RedisTimeoutError,
                RedisClusterException,
                OSError,
                ResponseError,
            ):
                await asyncio.sleep(self.backoff.delay_s(attempt))
                continue
            if entry is not None:
                await self.process(stream, [entry], {entry_id: count})
            return
        # Redis stayed away: the entry stays pending; the next set-up re-reads it.
