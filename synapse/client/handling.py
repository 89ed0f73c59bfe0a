"""Running one handler and settling its entry: success, retry, or dead letter.

``Handling`` holds the subscriber's per-entry state and the handler half of the
dispatch: call the handler (in a span when tracing, in a thread when it is sync,
with a ModelKit model when asked), then acknowledge; with ``dedupe_s`` mark and
acknowledge atomically and wait for the write; on an exception log its last line
and either schedule a retry after a capped backoff (XCLAIM then counts the
delivery on the server) or dead-letter it with ``handler_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from redis.exceptions import ResponseError

from synapse import keys
from synapse.backoff import Backoff
from synapse.client import tracing
from synapse.client.acks import Outcome
from synapse.client.event import Event
from synapse.client.seam import StreamsIO
from synapse.client.subscription import Subscription
from synapse.events import dead_letter_fields
from synapse.failures import CONNECTION_FAILURES
from synapse.plan import Entry

#: Retries start at this many seconds, doubling up to the subscription's retry_backoff_s.
RETRY_BASE_S = 0.1
FAILURES = CONNECTION_FAILURES
_CLAIM_FAILURES: tuple[type[BaseException], ...] = (*FAILURES, ResponseError)


class Handling:
    """Per-entry state, and running one handler to its outcome."""

    def __init__(
        self,
        service: str,
        subscriptions: Sequence[Subscription],
        *,
        dead_letter: str,
        log: Any,
        backoff: Backoff | None = None,
        retry_stream: str | None = None,
    ) -> None:
        self.service = service
        self.subscriptions = list(subscriptions)
        self.dead_letter = dead_letter
        self.retry_stream = retry_stream or keys.retry_stream(service)
        self.log = log
        self.backoff = backoff or Backoff()
        self.stopping = asyncio.Event()
        self.io: StreamsIO  # set by the subscriber
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
        #: Batches whose handlers are running, by stream: kept ours while they run.
        self._holding: list[tuple[str, list[bytes]]] = []

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _dispatch(
        self,
        stream: str,
        entries: Sequence[Entry],
        counts: dict[bytes, int],
        *,
        skip_retrying: bool,
    ) -> None:
        raise NotImplementedError  # Dispatcher

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

    async def _handle(self, sub: Subscription, event: Event, entry_id: bytes) -> None:
        # The plain case (no span, no model, nothing to mark) runs inline in the lane.
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
                except _CLAIM_FAILURES:
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
