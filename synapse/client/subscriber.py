"""The subscriber loop: the router's consumer loop, handing entries to handlers.

One ``Subscriber`` per process serves every subscription of a service: one
consumer (this process) in the service's group on each subscribed stream and on
the service's retry stream. The I/O is the store's ``seam.StreamsIO``
(``RedisStreams``: the router's own read, pending and group machinery; on Kafka
``KafkaStreams``); what happens to each entry is ``dispatch.py``.

The loop: set up (groups created, own pending entries handled first), then every
turn the chores that are due (claim entries idle longer than ``claim_idle_ms`` from
dead instances every ``claim_idle_ms / 2``, forget long-idle consumers), one
blocking read and its handlers, with read-ahead on a backlog. A read waits for the
batch in hand, so memory stays bounded by a batch. While handlers run, a keeper
re-claims their entries (JUSTID) so no other instance takes them from a live one.
Redis errors never end the loop: back off with jitter, then set up again
(recreating lost groups). ``stop``: stop reading, let the handlers in flight finish
within ``drain_timeout_s``, write their outcomes, leave the group if nothing is
pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from redis.exceptions import ResponseError

from synapse.backend import Pages, Read
from synapse.backoff import Backoff
from synapse.chores import every
from synapse.client.dispatch import Dispatcher
from synapse.client.handling import FAILURES
from synapse.client.subscription import Subscription
from synapse.errors import Failure

#: How often long-idle consumers of the group are forgotten (the router's rhythm).
HOUSEKEEP_S = 60.0
#: Longest stretch of read-ahead before the loop returns to its chores (the router's).
PIPELINE_MAX_S = 1.0


class Subscriber(Dispatcher):
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
        retry_stream: str | None = None,
    ) -> None:
        super().__init__(
            service,
            subscriptions,
            dead_letter=dead_letter,
            log=log,
            backoff=backoff,
            retry_stream=retry_stream,
        )
        self.drain_timeout_s = drain_timeout_s
        self._flusher_done = asyncio.Event()  # set once handlers are done: flush, then end
        self.io = io_factory(self.stopping)
        self.ready = False
        self._claim_idle_ms = min(s.claim_idle_ms for s in self.subscriptions)
        self._claim_every_s = self._claim_idle_ms / 1000 / 2

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
        reclaim, forget = every(self._claim_every_s), every(HOUSEKEEP_S)
        reclaim.ran(time.monotonic())
        forget.ran(time.monotonic())
        while not self.stopping.is_set():
            try:
                if needs_setup:
                    await self.io.setup()
                    await self._process_all(self.io.own_pending())
                    needs_setup = False
                    if not self.ready:
                        self.log.info("subscriber_ready", streams=self.io.streams)
                    self.ready = True
                now = time.monotonic()
                if reclaim.due(now):
                    await self._process_all(self.io.reclaim())
                if forget.due(now):
                    await self.io.forget_idle()
                await self._read_and_handle()
                attempt = 0
            except Exception as exc:  # what happens next is by its kind (the router's classify)
                attempt += 1
                needs_setup = True
                failure = self.io.classify(exc)
                if failure == Failure.NO_GROUP:
                    self.log.warning("group_missing", error=str(exc), group=self.service)
                    await self._sleep(self.backoff.delay_s(attempt) if attempt > 1 else 0)
                    continue
                if failure == Failure.INTERNAL:  # a bug must not stop the service for good
                    self.log.exception("subscriber_error", error=repr(exc), attempt=attempt)
                else:
                    kind = "connection" if failure == Failure.CONNECTION else "response"
                    self._down(kind, exc, attempt)
                await self._sleep(self.backoff.delay_s(attempt))

    async def _read_and_handle(self) -> None:
        """One blocking read and its handlers; with a backlog, the next read is sent first.

        Read-ahead (the router's ``Reads.ahead``) overlaps the server's next read with
        this batch's handlers, for at most ``PIPELINE_MAX_S`` before the chores run
        again. Entries read ahead but not handled (an error, a stop) stay pending and
        are handled at the next set-up or start.
        """
        read = await self.io.read()
        deadline = time.monotonic() + PIPELINE_MAX_S
        ahead: asyncio.Future[Read] | None = None
        try:
            while read:
                if not self.stopping.is_set() and time.monotonic() < deadline:
                    ahead = self.io.read_ahead(read)
                for batch in read:
                    # Redis counts only redeliveries (own pending, claims); a Kafka read
                    # can hand out a record counted again after a restart (its head).
                    counted = dict(batch.deliveries) if batch.deliveries else None
                    await self.process(batch.source, batch.entries, counted)
                if ahead is None:
                    return
                read, ahead = await ahead, None
        finally:
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await ahead

    async def _process_all(self, batches: Pages) -> None:
        """Handle each batch the backend hands over (own pending, reclaimed) in turn."""
        async with contextlib.aclosing(batches) as pages:
            async for batch in pages:
                await self.process(batch.source, batch.entries, dict(batch.deliveries or {}))

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
