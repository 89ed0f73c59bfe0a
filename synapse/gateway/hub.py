"""The one shared read loop: every stream any client watches, read by one XREAD.

The hub keeps a read position per active stream and one dedicated Redis
connection blocked in ``XREAD BLOCK`` on all of them (no consumer group: a
gateway reads, it never acknowledges). Each reply is decoded once and handed to
the channels (``channel.py``), which share it among their clients. A new
stream joins at its last entry; the blocked read is woken with ``CLIENT
UNBLOCK`` so it is read at once. A resuming client registers first (its live
events start buffering), then reads what it missed with ``XRANGE`` from its
cursor up to where it joined (``catchup.py``): no gap, no repeat. Redis
connections: this one plus a small pool for joins and catch-ups, however many
clients there are.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from synapse import log
from synapse.backoff import Backoff
from synapse.gateway.channel import NOT_A_STREAM, SHUTDOWN, Channel, Shape, Subscriber, fan_out
from synapse.gateway.cursor import ZERO, IdKey, id_key
from synapse.gateway.metrics import GatewayMetrics
from synapse.gateway.redisconn import call, control_client, key_type, reader_client

logger = log.get("synapse.gateway")


class NotAStream(Exception):
    """A requested key exists and is not a stream."""


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
        self.positions: dict[str, IdKey] = {}
        self.refs: dict[str, int] = {}
        self.channels: dict[Shape, Channel] = {}
        self.subscribers = 0
        self.ready = False
        self.reads = 0  # completed XREADs (and idle pings), for waiters
        self._read_done = asyncio.Condition()
        self._active = asyncio.Event()
        self._starting: dict[str, asyncio.Future[None]] = {}
        self._stopping = False
        self._reader: aioredis.Redis = reader_client(url, block_ms)
        self.control: aioredis.Redis = control_client(url)
        self._reader_id: int | None = None
        self._blocked = False
        self._backoff = Backoff(base_s=0.1, cap_s=5.0)

    # -- subscriptions -------------------------------------------------------------------

    async def subscribe(
        self, shape: Shape, on_drop: Callable[[str], None] = lambda reason: None
    ) -> Subscriber:
        """Register a subscriber at the streams' current read positions (see ``joined_at``)."""
        try:
            while new := [s for s in shape.streams if s not in self.positions]:
                await self._activate(new)  # (another client may deactivate one meanwhile)
        except BaseException:  # not a stream, Redis gone, the client left: read nothing for it
            self._forget_unwatched(shape.streams)
            raise
        # No await from here on: the subscriber joins exactly at the current positions.
        sub = Subscriber(shape, self.client_buffer_bytes, on_drop)
        channel = self.channels.get(shape)
        if channel is None:
            channel = self.channels[shape] = Channel(shape, self.positions)
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
        kind = await key_type(self.control, stream)
        if kind not in ("stream", "none"):
            raise NotAStream(f"{stream!r} is a {kind}, not a stream")
        last = await self._last_key(stream)
        self.positions.setdefault(stream, last)

    def _started(self, stream: str, done: asyncio.Future[None]) -> None:
        self._starting.pop(stream, None)
        if not done.cancelled():
            done.exception()  # retrieved here: a join that gave up waiting must not warn

    async def _last_key(self, stream: str) -> IdKey:
        reply = await call(self.control, "XREVRANGE", stream, "+", "-", "COUNT", 1)
        return id_key(reply[0][0].decode()) if reply else ZERO

    async def wake_reader(self) -> None:
        """Unblock the XREAD in progress so it picks up new streams now."""
        if not self._blocked or self._reader_id is None:
            return
        try:
            await call(self.control, "CLIENT", "UNBLOCK", self._reader_id)
        except RedisError as exc:  # e.g. an ACL without CLIENT: new streams wait block_ms
            logger.debug("reader_unblock_failed", error=str(exc))

    async def settle(self, cursor: dict[str, IdKey], timeout_s: float = 2.0) -> None:
        """Let the reader reach a resuming client's cursor before it joins.

        A cursor ahead of the read position (written by another gateway, or by
        this one just before a restart) would otherwise see the entries between
        them twice. Waits until the positions reach it, or a read that started
        after this call has completed (then those entries do not exist).
        """

        def behind() -> bool:
            return any(s in self.positions and k > self.positions[s] for s, k in cursor.items())

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
        """Read and fan out until ``stop``; Redis errors back off and retry."""
        attempt = 0
        while not self._stopping:
            try:
                await self._read_once()
                attempt = 0
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                attempt += 1
                self._on_error(exc)
                if isinstance(exc, ResponseError) and "WRONGTYPE" in str(exc):
                    await self._drop_non_streams()
                    continue
                await asyncio.sleep(self._backoff.delay_s(attempt))
            await self._count_read()

    async def _count_read(self) -> None:
        async with self._read_done:
            self.reads += 1
            self._read_done.notify_all()

    def _on_error(self, exc: BaseException) -> None:
        kind = type(exc).__name__
        if self.ready:
            logger.warning("redis_unavailable", error=str(exc), kind=kind)
        self.ready = False
        self._reader_id = None
        self.metrics.redis_up.set(0)
        self.metrics.redis_errors.labels(kind=kind).inc()

    async def _read_once(self) -> None:
        if self._reader_id is None:
            self._reader_id = int(await call(self._reader, "CLIENT", "ID"))
            self._set_ready()
        if not self.positions:
            self._active.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # arrives as the event is set, and the loop would never stop
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.block_ms / 1000):
                    await self._active.wait()
            if not self.positions:
                await call(self._reader, "PING")
                self._set_ready()
                return
        streams = list(self.positions)
        ids = [f"{k[0]}-{k[1]}" for k in (self.positions[s] for s in streams)]
        self._blocked = True
        try:
            reply = await call(
                self._reader,
                "XREAD",
                "COUNT",
                self.count,
                "BLOCK",
                self.block_ms,
                "STREAMS",
                *streams,
                *ids,
            )
        finally:
            self._blocked = False
        self._set_ready()
        if reply:
            self.dispatch(reply)

    def _set_ready(self) -> None:
        if not self.ready:
            logger.info("redis_connected")
        self.ready = True
        self.metrics.redis_up.set(1)

    def dispatch(self, reply: list[Any]) -> None:
        """Hand one XREAD reply to the channels (advancing the positions); count it."""
        read_at = time.time()
        tally = fan_out(reply, self.positions, self.channels.values())
        m = self.metrics
        m.sent_bytes.inc(tally.sent_bytes)
        m.events_read.inc(tally.read)
        m.deliveries.inc(tally.deliveries)
        if tally.first_ms:
            m.read_lag.observe(max(0.0, read_at - tally.first_ms / 1000))
            m.write_lag.observe(max(0.0, time.time() - tally.first_ms / 1000))

    async def _drop_non_streams(self) -> None:
        for s in list(self.positions):
            with contextlib.suppress(RedisError):
                kind = await key_type(self.control, s)
                if kind not in ("stream", "none"):
                    logger.warning("stream_not_a_stream", stream=s, kind=kind)
                    for channel in list(self.channels.values()):
                        if s in channel.shape.streams:
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
        await self._reader.aclose()
        await self.control.aclose()
