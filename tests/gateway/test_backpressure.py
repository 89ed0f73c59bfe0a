"""Slow clients, bounded memory, and the Redis connections the gateway holds."""

from __future__ import annotations

import asyncio
import socket

import redis.asyncio as aioredis

from synapse.gateway.app import Gateway
from tests.conftest import wait_for
from tests.gateway.conftest import base_url
from tests.gateway.sse import open_events

LIMIT_BYTES = 1024 * 1024  # the default --client-buffer-kib


async def stalled_client(port: int, path: str) -> socket.socket:
    """A client that sends its request, reads the headers, then never reads again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(sock, 1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def buffered(gw: Gateway) -> tuple[int, int]:
    """(most bytes one client has waiting, here or in its socket's buffer; largest chunk)."""
    most = largest = 0
    for channel in gw.hub.channels.values():
        for sub in channel.subscribers:
            socket_bytes = sub.writer.get_write_buffer_size() if sub.writer else 0
            most = max(most, sub.pending_bytes + socket_bytes)
            largest = max([largest, *map(len, sub.chunks)])
    return most, largest


async def test_a_client_that_stops_reading_is_dropped_while_others_get_everything(
    gateway_at, aclient: aioredis.Redis
) -> None:
    """The stalled client is disconnected (slow); the reading one receives every event."""
    async with gateway_at(client_buffer_bytes=LIMIT_BYTES) as gw:
        stalled = await stalled_client(gw.port, "/events?stream=firehose")
        reader = await open_events(base_url(gw), "stream=firehose")
        await wait_for(lambda: gw.hub.subscribers == 2, what="both subscribed")
        peak = largest = 0

        async def sample() -> None:
            nonlocal peak, largest
            while True:
                held, chunk = buffered(gw)
                chunk = max([chunk, *(c.largest_chunk for c in gw.hub.channels.values())])
                peak, largest = max(peak, held), max(largest, chunk)
                await asyncio.sleep(0.001)

        sampler = asyncio.create_task(sample())
        body = "x" * 2000
        count = 3000
        try:
            received = asyncio.create_task(reader.take(count, timeout_s=30))
            for start in range(0, count, 100):
                pipe = aclient.pipeline(transaction=False)
                for i in range(start, start + 100):
                    pipe.xadd("firehose", {"type": "t", "data": f'{{"i": {i}, "pad": "{body}"}}'})
                await pipe.execute()
                await asyncio.sleep(0.02)  # ~10 MB/s: a reading client keeps up, a stalled one not
            got = await received
            assert [m.data["data"]["i"] for m in got] == list(range(count))
            await wait_for(lambda: gw.hub.subscribers == 1, what="the stalled client dropped")
            dropped = gw.metrics.disconnected.labels(reason="slow")._value.get()
            assert dropped == 1
            # memory bound: a client holds at most the limit plus the read being sent
            assert peak <= LIMIT_BYTES + largest
        finally:
            sampler.cancel()
            stalled.close()
            await reader.close()


async def test_redis_connections_stay_constant_as_clients_grow(
    gateway_at, aclient: aioredis.Redis
) -> None:
    """60 clients on 6 stream sets use the same few Redis connections as 1 client."""

    async def gateway_connections() -> int:
        clients = await aclient.client_list()
        return sum(1 for c in clients if c["name"].startswith("synapse-gateway"))

    async with gateway_at() as gw:
        base = base_url(gw)
        first = await open_events(base, "stream=s0")
        await wait_for(lambda: gw.hub.subscribers == 1, what="subscribed")
        one = await gateway_connections()
        many = [await open_events(base, f"stream=s{i % 6}&stream=t") for i in range(60)]
        await wait_for(lambda: gw.hub.subscribers == 61, what="all subscribed")
        await aclient.xadd("t", {"type": "x", "data": "{}"})
        for sse in many:
            [msg] = await sse.take(1)
            assert msg.data["stream"] == "t"
        assert await gateway_connections() <= max(one, 1) + 4  # the reader + a bounded pool
        assert await gateway_connections() <= 5
        for sse in [first, *many]:
            await sse.close()


async def test_a_stream_replaced_by_another_type_drops_its_clients_only(
    gateway_at, aclient: aioredis.Redis
) -> None:
    """WRONGTYPE on one watched key ends that key's clients; other streams keep flowing."""
    async with gateway_at() as gw:
        base = base_url(gw)
        doomed = await open_events(base, "stream=doomed")
        fine = await open_events(base, "stream=fine")
        await wait_for(lambda: gw.hub.subscribers == 2, what="subscribed")
        await aclient.delete("doomed")
        await aclient.set("doomed", "not a stream any more")
        await gw.hub.wake_reader()
        assert await doomed.next(10) is None
        await aclient.xadd("fine", {"type": "x", "data": "{}"})
        [msg] = await fine.take(1)
        assert msg.data["stream"] == "fine"
        assert gw.metrics.disconnected.labels(reason="not_a_stream")._value.get() == 1
        await doomed.close()
        await fine.close()


async def test_a_crowd_joining_a_new_stream_starts_it_once(
    gateway_at, aclient: aioredis.Redis
) -> None:
    """50 simultaneous joins on an unread stream cost one XREVRANGE, not 50."""
    await aclient.xadd("crowd", {"type": "t", "data": "{}"})
    await aclient.config_resetstat()
    async with gateway_at() as gw:
        clients = await asyncio.gather(
            *(open_events(base_url(gw), "stream=crowd") for _ in range(50))
        )
        await wait_for(lambda: gw.hub.subscribers == 50, what="all joined")
        stats = await aclient.info("commandstats")
        assert stats["cmdstat_xrevrange"]["calls"] == 1
        await aclient.xadd("crowd", {"type": "t", "data": '{"n": 1}'})
        for sse in clients:
            [msg] = await sse.take(1)
            assert msg.data["data"] == {"n": 1}
            await sse.close()
