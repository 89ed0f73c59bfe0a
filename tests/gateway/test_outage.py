"""Redis going away is not fatal: not ready meanwhile, then the same streams carry on."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis

from synapse.embedded import EmbeddedServer
from tests.conftest import wait_for
from tests.gateway.conftest import base_url, serving
from tests.gateway.sse import open_events, status_of


async def test_clients_keep_their_stream_across_a_redis_restart(tmp_path: Path) -> None:
    """Server down: /readyz 503, new joins 503; back: connected clients get the next events."""
    server = EmbeddedServer(data_dir=tmp_path / "srv").start()
    try:
        async with serving(server.url, block_ms=200) as gw:
            base = base_url(gw)
            sse = await open_events(base, "stream=ops")
            await wait_for(lambda: gw.hub.subscribers == 1, what="subscribed")
            client = aioredis.Redis.from_url(server.url)
            before = [(await client.xadd("ops", {"type": "a", "data": "{}"})).decode()]
            await client.aclose()
            assert [m.data["entry_id"] for m in await sse.take(1)] == before

            server.stop()
            await wait_for(lambda: not gw.hub.ready, what="not ready")
            assert (await status_of(f"{base}/readyz"))[0] == 503
            assert (await status_of(f"{base}/events?stream=other"))[0] == 503

            server.start()
            await wait_for(lambda: gw.hub.ready, timeout_s=20, what="ready again")
            client = aioredis.Redis.from_url(server.url)
            after = [(await client.xadd("ops", {"type": "b", "data": "{}"})).decode()]
            await client.aclose()
            got = await sse.take(1, timeout_s=20)
            assert [m.data["entry_id"] for m in got] == after
            assert gw.metrics.redis_errors.collect()[0].samples
            await sse.close()
    finally:
        server.stop()
