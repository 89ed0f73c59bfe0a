"""The one shared read loop: every stream any client watches, read by one reader.

The hub keeps a read position per active stream and hands them to the store's
reader (``store.py``: one XREAD connection on Redis, one consumer by ``assign``
on Kafka; never one per client, never a consumer group: a gateway reads, it
never acknowledges). Each read is decoded once and handed to the channels
(``channel.py``), which share it among their clients. A new stream joins at its
live end, and the reader is woken to read it at once. A resuming client
registers first (its live events start buffering), then reads what it missed
from its cursor up to where it joined (``catchup.py``): no gap, no repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable

from synapse import log
from synapse.backoff import Backoff
from synapse.gateway.channel import (
    NOT_A_STREAM,
    SHUTDOWN,
    Batches,
    Channel,
    Shape,
    Subscriber,
    fan_out,
)
from synapse.gateway.cursor import Position
from synapse.gateway.metrics import GatewayMetrics
from synapse.gateway.store import NotAStream, NotStreams, StreamReader, open_reader

logger = log.get("synapse.gateway")

__all__ = ["Hub", "NotAStream"]


class Hub:
    """Channels, subscribers, and the read loop that feeds them."""

    def __init__(
        self,
        url: str,
        metrics: GatewayMetrics,
        *,
        block_ms: int = 1000,
        count: int = 1000,
        client_buffer_bytes: int = 1 << 20,
    ) -> None:
        self.url = url
        self.metrics = metrics
        self.block_ms = block_ms
        self.count = count
        self.client_buffer_bytes = client_buffer_bytes
        self.reader: StreamReader = open_reader(url, block_ms=block_ms, count=count)
        self.codec = self.reader.codec
        self.positions: dict[str, Position] = {}
        self.refs: dict[str, int] = {}
        self.channels: dict[Shape, Channel] = {}
        self.subscribers = 0
        self.ready = False
        self.reads = 0  # completed XREADs (and idle pings), for waiters
        self._read_done = asyncio.Condition()
        self._active = asyncio.Event()
        self._starting: dict[str, asyncio.Future[None]] = {}
        self._stopping = False
        self._backoff = Backoff(base_s=0.1, cap_s=5.0)

    # -- subscriptions -------------------------------------------------------------------

    async def subscribe(
        self, shape: Shape, on_drop: Callable[[str], None] = lambda reason: None
    ) -> Subscriber:
        """Register a subscriber at the streams' current read positions (see ``joined_at``)."""
        try:
            while new := [s for s in shape.streams if s not in self.positions]:
                await self._activate(new)  # (another client may deactivate one meanwhile)
        except BaseException:  # not a stream, the store gone, the client left: read nothing
            self._forget_unwatched(shape.streams)
            raise
        # No await from here on: the subscriber joins exactly at the current positions.
        sub = Subscriber(shape, self.client_buffer_bytes, on_drop)
        channel = self.channels.get(shape)
        if channel is None:
            channel = self.channels[shape] = Channel(shape, self.positions, self.codec)
            for s in shape.streams:
                self.refs[s] = self.refs.get(s, 0) + 1
        channel.subscribers.add(sub)
        sub.joined_at = {s: self.positions[s] for s in shape.streams}
        self.subscribers += 1
        self.metrics.clients.set(self.subscribers)
        self.metrics.streams.set(len(self.positions))
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        channel = self.channels.get(sub.shape)
        if channel is None or sub not in channel.subscribers:
            return
        channel.subscribers.discard(sub)
        self.subscribers -= 1
        if not channel.subscribers:
            del self.channels[sub.shape]
            for s in sub.shape.streams:
                self.refs[s] -= 1
                if self.refs[s] == 0:
                    del self.refs[s]
                    self.positions.pop(s, None)
        self.metrics.clients.set(self.subscribers)
        self.metrics.streams.set(len(self.positions))

    def _forget_unwatched(self, streams: tuple[str, ...]) -> None:
        for s in streams:
            if s not in self.refs and s not in self._starting:
                self.positions.pop(s, None)

    async def _activate(self, streams: list[str]) -> None:
        """Start reading ``streams`` at their last entry; joins share one start per stream."""
        for s in streams:
            starting = self._starting.get(s)
            if starting is None:
                starting = self._starting[s] = asyncio.ensure_future(self._start(s))
                starting.add_done_callback(functools.partial(self._started, s))
            await asyncio.shield(starting)
        self._active.set()
        await self.wake_reader()

    async def _start(self, stream: str) -> None:
        last = await self.reader.join(stream)
        self.positions.setdefault(stream, last)

    def _started(self, stream: str, done: asyncio.Future[None]) -> None:
        self._starting.pop(stream, None)
        if not done.cancelled():
            done.exception()  # retrieved here: a join that gave up waiting must not warn

    async def wake_reader(self) -> None:
        """End the read in progress so that it picks up new streams now."""
        await self.reader.wake()

    async def settle(self, cursor: dict[str, Position], timeout_s: float = 2.0) -> None:
        """Let the reader reach a resuming client's cursor before it joins.

        A cursor ahead of the read position (written by another gateway, or by
        this one just before a restart) would otherwise see the entries between
        them twice. Waits until the positions reach it, or a read that started
        after this call has completed (then those entries do not exist).
        """

        ahead = self.codec.ahead

        def behind() -> bool:
            return any(
                s in self.positions and ahead(k, self.positions[s]) for s, k in cursor.items()
            )

        if not behind():
            return
        after = self.reads
        await self.wake_reader()
        async with self._read_done:
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: never eats a cancel
                async with asyncio.timeout(timeout_s):
                    await self._read_done.wait_for(lambda: not behind() or self.reads >= after + 2)

    # -- the read loop -------------------------------------------------------------------

    async def run(self) -> None:
        """Read and fan out until ``stop``; the store's errors back off and retry."""
        attempt = 0
        errors = self.reader.errors
        while not self._stopping:
            try:
                await self._read_once()
                attempt = 0
            except asyncio.CancelledError:
                raise
            except NotStreams as exc:
                self._on_error(exc.__cause__ or exc)  # counted as the store's reply (WRONGTYPE)
                self._drop(exc.streams)
                continue
            except errors as exc:
                attempt += 1
                self._on_error(exc)
                await asyncio.sleep(self._backoff.delay_s(attempt))
            await self._count_read()

    async def _count_read(self) -> None:
        async with self._read_done:
            self.reads += 1
            self._read_done.notify_all()

    def _on_error(self, exc: BaseException) -> None:
        kind = type(exc).__name__
        if self.ready:
            logger.warning("redis_unavailable", store=self.reader.label, error=str(exc), kind=kind)
        self.ready = False
        self.metrics.redis_up.set(0)
        self.metrics.redis_errors.labels(kind=kind).inc()

    async def _read_once(self) -> None:
        if not self.ready:
            await self.reader.connect()
            self._set_ready()
        if not self.positions:
            self._active.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # arrives as the event is set, and the loop would never stop
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.block_ms / 1000):
                    await self._active.wait()
            if not self.positions:
                await self.reader.ping()
                self._set_ready()
                return
        batches = await self.reader.read(dict(self.positions))
        self._set_ready()
        for stream, key in self.reader.restarted():
            if stream in self.positions:
                self.positions[stream] = self.codec.restart(self.positions[stream], key)
        if batches:
            self.dispatch(batches)

    def _set_ready(self) -> None:
        if not self.ready:
            logger.info("redis_connected", store=self.reader.label)
        self.ready = True
        self.metrics.redis_up.set(1)

    def dispatch(self, batches: Batches) -> None:
        """Hand one read to the channels (advancing the positions); count it."""
        read_at = time.time()
        tally = fan_out(batches, self.positions, self.channels.values(), self.codec)
        m = self.metrics
        m.sent_bytes.inc(tally.sent_bytes)
        m.events_read.inc(tally.read)
        m.deliveries.inc(tally.deliveries)
        if tally.first_ms:
            m.read_lag.observe(max(0.0, read_at - tally.first_ms / 1000))
            m.write_lag.observe(max(0.0, time.time() - tally.first_ms / 1000))

    def _drop(self, streams: list[str]) -> None:
        """End the subscribers of ``streams`` (no longer streams)."""
        for channel in list(self.channels.values()):
            if any(s in channel.shape.streams for s in streams):
                for sub in tuple(channel.subscribers):
                    sub.drop(NOT_A_STREAM)

    # -- keep-alive and shutdown ---------------------------------------------------------

    def broadcast(self, chunk: bytes) -> None:
        for channel in tuple(self.channels.values()):
            channel.broadcast(chunk)

    def stop(self) -> None:
        """Stop reading and end every subscriber's response."""
        self._stopping = True
        self._active.set()
        for channel in tuple(self.channels.values()):
            for sub in tuple(channel.subscribers):
                sub.drop(SHUTDOWN)

    async def close(self) -> None:
        await self.reader.close()
