"""/events end to end: a real gateway on a free port, a real server, real HTTP clients."""

from __future__ import annotations

import asyncio
import json

import redis.asyncio as aioredis

from synapse.gateway.access import Cors, StreamPolicy
from tests.conftest import wait_for
from tests.gateway.conftest import base_url
from tests.gateway.sse import open_events, status_of


async def publish(client: aioredis.Redis, stream: str, event_type: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        raw = await client.xadd(stream, {"type": event_type, "data": json.dumps({"n": i})})
        ids.append(raw.decode())
    return ids


async def test_client_receives_exactly_the_published_events_in_order_per_stream(
    gateway_at, aclient
) -> None:
    """Two streams, interleaved writes: every event arrives once, each stream in its order."""
    async with gateway_at() as gw:
        sse = await open_events(base_url(gw), "stream=orders&stream=models")
        try:
            await wait_for(lambda: gw.hub.subscribers == 1, what="subscribed")
            want: dict[str, list[str]] = {"orders": [], "models": []}
            for i in range(40):
                stream = "orders" if i % 3 else "models"
                want[stream] += await publish(aclient, stream, f"{stream}.made", 1)
            got = await sse.take(40)
            for stream in want:
                seen = [m.data["entry_id"] for m in got if m.data["stream"] == stream]
                assert seen == want[stream]
            last = got[-1]
            assert last.id == f"orders/{want['orders'][-1]},models/{want['models'][-1]}"
            assert last.event == last.data["type"]
            assert set(last.data) >= {"type", "data", "id", "time", "source", "stream", "entry_id"}
        finally:
            await sse.close()


async def test_one_stream_cursor_is_stream_slash_entry_id_and_named_0_drops_event_line(
    gateway_at, aclient
) -> None:
    """`id:` is <stream>/<entry-id>; `?named=0` sends no `event:` line (onmessage sees all)."""
    async with gateway_at() as gw:
        named = await open_events(base_url(gw), "stream=models")
        plain = await open_events(base_url(gw), "stream=models&named=0")
        try:
            await wait_for(lambda: gw.hub.subscribers == 2, what="subscribed")
            [entry_id] = await publish(aclient, "models", "model.ready", 1)
            [a] = await named.take(1)
            [b] = await plain.take(1)
            assert a.id == b.id == f"models/{entry_id}"
            assert a.event == "model.ready" and b.event is None
            assert a.data == b.data and a.data["data"] == {"n": 0}
        finally:
            await named.close()
            await plain.close()


async def test_type_filter_serves_only_matching_types(gateway_at, aclient) -> None:
    """`type=GLOB` (repeated or comma-separated) passes only the matching event types."""
    async with gateway_at() as gw:
        sse = await open_events(base_url(gw), "stream=s&type=model.*&type=x.a,x.b")
        try:
            await wait_for(lambda: gw.hub.subscribers == 1, what="subscribed")
            for t in ("model.ready", "inference.done", "x.a", "x.c", "model.gone", "x.b"):
                await publish(aclient, "s", t, 1)
            got = await sse.take(4)
            assert [m.data["type"] for m in got] == ["model.ready", "x.a", "model.gone", "x.b"]
        finally:
            await sse.close()


async def test_resume_after_a_cut_misses_nothing_and_repeats_nothing(gateway_at, aclient) -> None:
    """Reconnecting with Last-Event-ID (header, then query) gets exactly what came since."""
    async with gateway_at() as gw:
        base = base_url(gw)
        first = await open_events(base, "stream=a&stream=b")
        await wait_for(lambda: gw.hub.subscribers == 1, what="subscribed")
        await publish(aclient, "a", "t.a", 3)
        await publish(aclient, "b", "t.b", 2)
        seen = await first.take(5)
        await first.close()
        missed = await publish(aclient, "a", "t.a", 4) + await publish(aclient, "b", "t.b", 3)
        second = await open_events(base, "stream=a&stream=b", {"Last-Event-ID": seen[-1].id})
        try:
            got = await second.take(7)
            assert [m.data["entry_id"] for m in got] == missed
            later = await publish(aclient, "b", "t.b", 2)
            assert [m.data["entry_id"] for m in await second.take(2)] == later
            cursor = second.last_id
        finally:
            await second.close()
        final = await publish(aclient, "a", "t.a", 2)
        third = await open_events(base, f"stream=a&stream=b&last_event_id={cursor}")
        try:
            assert [m.data["entry_id"] for m in await third.take(2)] == final
        finally:
            await third.close()


async def test_resume_while_events_keep_coming_joins_live_without_gap_or_repeat(
    gateway_at, aclient
) -> None:
    """A client resuming mid-burst catches up by XRANGE and joins the live read seamlessly."""
    async with gateway_at() as gw:
        base = base_url(gw)
        watcher = await open_events(base, "stream=busy")
        await wait_for(lambda: gw.hub.subscribers == 1, what="subscribed")
        published: list[str] = []

        async def burst() -> None:
            for _ in range(60):
                published.extend(await publish(aclient, "busy", "t", 10))
                await asyncio.sleep(0.002)

        task = asyncio.create_task(burst())
        early = await watcher.take(50)
        await watcher.close()
        resumed = await open_events(base, "stream=busy", {"Last-Event-ID": early[-1].id})
        try:
            await task
            rest = await resumed.take(600 - 50)
            ids = [m.data["entry_id"] for m in early + rest]
            assert ids == published
        finally:
            await resumed.close()


async def test_streams_outside_the_allowlist_are_refused_with_403(gateway_at) -> None:
    """`--streams` globs decide; one refused stream refuses the request."""
    async with gateway_at(policy=StreamPolicy(("public-*",))) as gw:
        base = base_url(gw)
        status, body, _ = await status_of(f"{base}/events?stream=public-a&stream=secret")
        assert status == 403 and "secret" in body
        sse = await open_events(base, "stream=public-a")
        await sse.close()


async def test_dead_letter_stream_is_never_served_unless_listed_by_exact_name(gateway_at) -> None:
    """synapse:* streams: refused by default and through a glob; served when named exactly."""
    for policy, allowed in (
        (StreamPolicy(None), False),
        (StreamPolicy(("*",)), False),
        (StreamPolicy(("synapse:*",)), False),
        (StreamPolicy(("synapse:dlq",)), True),
    ):
        async with gateway_at(policy=policy) as gw:
            if allowed:
                sse = await open_events(base_url(gw), "stream=synapse:dlq")
                await sse.close()
            else:
                status, _, _ = await status_of(f"{base_url(gw)}/events?stream=synapse:dlq")
                assert status == 403, policy


async def test_token_is_required_on_events_and_page_by_header_or_query(gateway_at) -> None:
    """With a token: 401 without it or with a wrong one; Bearer header or ?token= pass."""
    async with gateway_at(token="s3cret-token") as gw:
        base = base_url(gw)
        for path in ("/events?stream=a", "/", "/streams"):
            status, _, headers = await status_of(base + path)
            assert status == 401, path
            assert "Bearer" in headers["WWW-Authenticate"]
            wrong, _, _ = await status_of(base + path, {"Authorization": "Bearer nope"})
            assert wrong == 401
        status, _, _ = await status_of(f"{base}/events?stream=a&token=wrong")
        assert status == 401
        # readiness follows the read loop's first answer from the server (a loaded machine
        # may take a moment): wait for it, then every probe answers without the token
        await wait_for(lambda: gw.hub.ready, 10, "the gateway's first answer from the server")
        for path in ("/healthz", "/readyz", "/metrics"):
            status, _, _ = await status_of(base + path)
            assert status == 200, path
        sse = await open_events(base, "stream=a", {"Authorization": "Bearer s3cret-token"})
        await sse.close()
        sse = await open_events(base, "stream=a&token=s3cret-token")
        await sse.close()
        status, body, _ = await status_of(f"{base}/?token=s3cret-token")
        assert status == 200 and "EventSource" in body


async def test_client_cap_answers_503_and_frees_the_slot_on_leave(gateway_at) -> None:
    """`max_clients` clients at once; the next gets 503 with Retry-After until one leaves."""
    async with gateway_at(max_clients=2) as gw:
        base = base_url(gw)
        a = await open_events(base, "stream=a")
        b = await open_events(base, "stream=b")
        status, _, headers = await status_of(f"{base}/events?stream=c")
        assert status == 503 and headers["Retry-After"] == "5"
        await a.close()
        await wait_for(lambda: gw.clients == 1, what="slot freed")
        c = await open_events(base, "stream=c")
        await b.close()
        await c.close()


async def test_bad_requests_get_400_with_the_reason(gateway_at, aclient) -> None:
    """No stream, a malformed Last-Event-ID, a key that is not a stream: 400, nothing held."""
    await aclient.set("plain-key", "x")
    async with gateway_at() as gw:
        base = base_url(gw)
        status, body, _ = await status_of(f"{base}/events")
        assert status == 400 and "stream" in body
        status, body, _ = await status_of(f"{base}/events?stream=a&last_event_id=a/banana")
        assert status == 400 and "Last-Event-ID" in body
        status, body, _ = await status_of(f"{base}/events?stream=fine&stream=plain-key")
        assert status == 400 and "not a stream" in body
        assert gw.clients == 0 and gw.hub.subscribers == 0
        assert gw.hub.positions == {}  # nothing left being read for the refused request


async def test_cors_headers_only_for_the_allowed_origin(gateway_at) -> None:
    """Access-Control-Allow-Origin for --allow-origin, none for others or by default."""
    async with gateway_at(cors=Cors.of(["https://ops.example"])) as gw:
        base = base_url(gw)
        ok = await open_events(base, "stream=a", {"Origin": "https://ops.example"})
        assert ok.response.headers["Access-Control-Allow-Origin"] == "https://ops.example"
        await ok.close()
        other = await open_events(base, "stream=a", {"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.response.headers
        await other.close()
    async with gateway_at() as gw:
        plain = await open_events(base_url(gw), "stream=a", {"Origin": "https://ops.example"})
        assert "Access-Control-Allow-Origin" not in plain.response.headers
        await plain.close()


async def test_keepalive_comments_flow_while_idle(gateway_at) -> None:
    """An idle stream still sends `: keep-alive` comments (every keepalive_s)."""
    async with gateway_at(keepalive_s=0.05) as gw:
        sse = await open_events(base_url(gw), "stream=quiet")
        try:
            reader = asyncio.create_task(sse.next(5))
            await wait_for(lambda: "keep-alive" in sse.comments, what="a keep-alive comment")
            reader.cancel()
        finally:
            await sse.close()


async def test_stopping_the_gateway_ends_every_stream(gateway_at) -> None:
    """stop() ends open responses cleanly (browsers then reconnect and resume)."""
    async with gateway_at() as gw:
        sse = await open_events(base_url(gw), "stream=a")
        await wait_for(lambda: gw.hub.subscribers == 1, what="subscribed")
        gw.hub.stop()
        assert await sse.next(5) is None
        await sse.close()


async def test_cors_preflight_answers_only_allowed_origins(gateway_at) -> None:
    """OPTIONS /events: 204 with methods and headers for an allowed origin, 403 otherwise."""
    import aiohttp

    async with gateway_at(cors=Cors.of(["https://ops.example"])) as gw:
        url = f"{base_url(gw)}/events?stream=a"
        async with aiohttp.ClientSession() as session:
            async with session.options(url, headers={"Origin": "https://ops.example"}) as r:
                assert r.status == 204
                assert "Last-Event-ID" in r.headers["Access-Control-Allow-Headers"]
            async with session.options(url, headers={"Origin": "https://evil.example"}) as r:
                assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers


async def test_metrics_are_prometheus_text_named_synapse_gateway(gateway_at, aclient) -> None:
    """/metrics counts clients, reads, deliveries and refusals under synapse_gateway_* names."""
    async with gateway_at() as gw:
        base = base_url(gw)
        sse = await open_events(base, "stream=m")
        await wait_for(lambda: gw.hub.subscribers == 1, what="subscribed")
        await publish(aclient, "m", "t", 3)
        await sse.take(3)
        await status_of(f"{base}/events?stream=synapse:dlq")
        status, text, headers = await status_of(f"{base}/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        samples = {
            line.split(" ")[0]: float(line.split(" ")[1])
            for line in text.splitlines()
            if line and not line.startswith("#")
        }
        assert all(name.startswith("synapse_gateway_") for name in samples)
        assert samples["synapse_gateway_clients"] == 1
        assert samples["synapse_gateway_events_read_total"] == 3
        assert samples["synapse_gateway_deliveries_total"] >= 1
        assert samples['synapse_gateway_requests_refused_total{reason="forbidden"}'] == 1
        assert samples["synapse_gateway_redis_up"] == 1
        await sse.close()


async def test_a_cursor_ahead_of_this_gateways_read_repeats_nothing(gateway_at, aclient) -> None:
    """Resuming with a cursor from another gateway, ahead of this one's read: no repeats."""
    async with gateway_at() as gw:
        base = base_url(gw)
        watcher = await open_events(base, "stream=shared")
        await wait_for(lambda: gw.hub.subscribers == 1, what="subscribed")
        gw.hub._stopping = True  # this gateway's read stops, and falls behind...
        await gw.hub.wake_reader()
        await asyncio.wait_for(gw._tasks[0], 10)
        gw.hub._stopping = False
        seen_elsewhere = await publish(aclient, "shared", "t", 2)
        assert gw.hub.positions["shared"] < tuple(map(int, seen_elsewhere[-1].split("-")))
        joining = asyncio.create_task(
            open_events(base, "stream=shared", {"Last-Event-ID": f"shared/{seen_elsewhere[-1]}"})
        )
        await asyncio.sleep(0.05)
        gw._tasks[0] = asyncio.create_task(gw.hub.run())  # ...then resumes
        resumed = await joining
        later = await publish(aclient, "shared", "t", 1)
        try:
            assert [m.data["entry_id"] for m in await resumed.take(1)] == later
            got = await watcher.take(3)
            assert [m.data["entry_id"] for m in got] == seen_elsewhere + later
        finally:
            await resumed.close()
            await watcher.close()
