"""synapse-gateway on a redis+cluster:// URL: one XREAD per hash slot, the same contract."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from redis.cluster import RedisCluster

from synapse.gateway.cursor import format_cursor
from tests.cluster.conftest import slot
from tests.cluster.localcluster import LocalCluster
from tests.conftest import wait_for
from tests.gateway.conftest import base_url, serving
from tests.gateway.sse import open_events, status_of

#: Three streams: two sharing a hash slot ({m} tags), one elsewhere.
A, B, C = "{m}.models", "{m}.inference", "orders"


def publish(rc: RedisCluster, stream: str, event_type: str, n: int) -> list[str]:
    return [
        rc.xadd(stream, {"type": event_type, "data": json.dumps({"n": i})}).decode()
        for i in range(n)
    ]


async def test_streams_on_several_slots_are_served_and_resumed(curl: str, rc: RedisCluster) -> None:
    """Streams on two slots: every event once, each stream in order, the Redis cursor; a cut
    client resumes by Last-Event-ID with nothing missed and nothing twice."""
    assert slot(A) == slot(B) != slot(C)
    query = f"stream={A}&stream={B}&stream={C}".replace("{", "%7B").replace("}", "%7D")
    async with serving(curl) as gw:
        base = base_url(gw)
        first = await open_events(base, query)
        await wait_for(lambda: gw.hub.subscribers == 1, what="subscribed")
        want = {s: publish(rc, s, "t", 4) for s in (A, B, C)}
        got = await first.take(12)
        for s, ids in want.items():
            assert [m.data["entry_id"] for m in got if m.data["stream"] == s] == ids
        last = {s: tuple(map(int, ids[-1].split("-"))) for s, ids in want.items()}
        assert got[-1].id == format_cursor([A, B, C], last)
        await first.close()
        missed = {s: publish(rc, s, "t", 3) for s in (C, A, B)}
        again = await open_events(base, query, {"Last-Event-ID": got[-1].id or ""})
        try:
            rest = await again.take(9)
            for s, ids in missed.items():
                assert [m.data["entry_id"] for m in rest if m.data["stream"] == s] == ids
            status, body, _ = await status_of(f"{base}/streams")
            assert status == 200 and json.loads(body)["streams"] == sorted([A, B, C])
        finally:
            await again.close()


async def test_a_stream_joining_a_new_slot_is_read_at_once(curl: str, rc: RedisCluster) -> None:
    """A join wakes the slots' blocked reads: a new slot's stream is read well within
    block_ms, while the read already blocked on the other slot stays in flight."""
    async with serving(curl, block_ms=5000) as gw:
        base = base_url(gw)
        one = await open_events(base, f"stream={C}")
        await wait_for(lambda: gw.hub.subscribers == 1, what="subscribed")
        await asyncio.sleep(0.2)  # the read on C's slot is blocked now
        two = await open_events(base, "stream=%7Bm%7D.models")
        try:
            await wait_for(lambda: gw.hub.subscribers == 2, what="second subscribed")
            started = time.monotonic()
            [entry_id] = publish(rc, A, "t", 1)
            [msg] = await two.take(1, timeout_s=10)
            assert msg.data["entry_id"] == entry_id and time.monotonic() - started < 2.5
            [other] = publish(rc, C, "t", 1)
            assert (await one.take(1))[0].data["entry_id"] == other
        finally:
            await one.close()
            await two.close()


async def test_a_primary_away_is_not_ready_then_its_streams_carry_on(tmp_path: Path) -> None:
    """The primary of a watched slot stopped: /readyz 503; started again: ready, and the
    connected client gets that slot's next events."""
    cluster = LocalCluster(tmp_path / "c", primaries=3).start()
    try:
        async with serving(cluster.url, block_ms=200) as gw:
            base = base_url(gw)
            sse = await open_events(base, f"stream={C}&stream=%7Bm%7D.models")
            await wait_for(lambda: gw.hub.subscribers == 1, what="subscribed")
            node = cluster.node_for(C)
            node.stop()
            await wait_for(lambda: not gw.hub.ready, timeout_s=20, what="not ready")
            status, body, _ = await status_of(f"{base}/readyz")
            assert status == 503 and "Redis" in body
            reads, seen = gw.hub.reads, []
            while gw.hub.reads < reads + 4:  # retries: every primary is pinged, none flips ready
                seen.append(gw.hub.ready)
                await asyncio.sleep(0.01)
            assert not any(seen)
            node.start()
            cluster.wait_ok()
            await wait_for(lambda: gw.hub.ready, timeout_s=30, what="ready again")
            rc = RedisCluster(host="127.0.0.1", port=node.port)
            try:
                ids = publish(rc, C, "t", 2)
            finally:
                rc.close()
            got = await sse.take(2, timeout_s=20)
            assert [m.data["entry_id"] for m in got] == ids
            await sse.close()
    finally:
        cluster.stop()


async def test_cluster_connections_stay_constant_as_clients_grow(
    curl: str, rc: RedisCluster, local_cluster: LocalCluster
) -> None:
    """Twenty clients on two slots hold the connections one client holds."""

    def connections() -> int:
        total = 0
        for node in local_cluster.primary_nodes():
            with local_cluster.client(node) as c:
                total += int(c.info("clients")["connected_clients"]) - 1  # less this one
        return total

    query = f"stream={C}&stream=%7Bm%7D.models"
    async with serving(curl) as gw:
        base = base_url(gw)
        crowd = [await open_events(base, query)]
        try:
            await wait_for(lambda: gw.hub.subscribers == 1, what="subscribed")
            publish(rc, C, "t", 1)
            publish(rc, A, "t", 1)  # the test's own client now holds its connections too
            await crowd[0].take(2)
            one = connections()
            crowd += [await open_events(base, query) for _ in range(19)]
            await wait_for(lambda: gw.hub.subscribers == 20, what="20 subscribed")
            ids = publish(rc, C, "t", 1) + publish(rc, A, "t", 1)
            for sse in crowd[1:]:
                assert sorted(m.data["entry_id"] for m in await sse.take(2)) == sorted(ids)
            assert connections() == one
        finally:
            for sse in crowd:
                await sse.close()
