"""The client's failure paths: bad options, bad input, dead letters refused, crash loops."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis

from synapse.client import Bus, Event, resolve_url
from synapse.errors import SynapseError
from tests.client.conftest import serving
from tests.conftest import wait_for


def test_url_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """url= beats SYNAPSE_URL beats SYNAPSE_REDIS_URL beats the state folder's redis.url."""
    for name in ("SYNAPSE_URL", "SYNAPSE_REDIS_URL", "SYNAPSE_STATE_DIR", "STATE_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SynapseError, match="no Redis URL"):
        resolve_url(None)
    (tmp_path / ".synapse").mkdir()
    (tmp_path / ".synapse" / "redis.url").write_text("redis://from-file:1/0\n")
    assert resolve_url(None) == "redis://from-file:1/0"
    monkeypatch.setenv("SYNAPSE_REDIS_URL", "redis://redis-url:2/0")
    assert resolve_url(None) == "redis://redis-url:2/0"
    monkeypatch.setenv("SYNAPSE_URL", "redis://url:3/0")
    assert resolve_url(None) == "redis://url:3/0"
    assert resolve_url("redis://flag:4/0") == "redis://flag:4/0"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("concurrency", 0, "concurrency must be >= 1"),
        ("max_deliveries", 0, "max_deliveries must be >= 1"),
        ("retry_backoff_s", 0, "retry_backoff_s must be > 0"),
        ("dedupe_s", -1, "dedupe_s must be > 0"),
        ("claim_idle_ms", 0, "claim_idle_ms must be >= 1"),
        ("start", "middle", "start must be 'latest' or 'earliest'"),
        ("model", dict, "model= must be a ModelKit"),
    ],
)
def test_subscribe_refuses_bad_options(option: str, value: object, message: str) -> None:
    """Each bad subscribe option raises ValueError naming it."""
    bus = Bus("svc", url="redis://127.0.0.1:1/0", register=False)

    async def handler(event: Event) -> None:
        return None

    with pytest.raises(ValueError, match=message):
        bus.subscribe("s", **{option: value})(handler)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stream names"):
        bus.subscribe([])(handler)


async def test_run_needs_a_subscription_and_publish_checks_arguments(url: str) -> None:
    """run() with no handler, publish(model, data) and publish(object) are refused."""
    bus = Bus("svc", url=url, register=False)
    with pytest.raises(RuntimeError, match="subscribe a handler first"):
        await bus.run()
    with pytest.raises(TypeError, match="event type and a dict"):
        await bus.publish(42)
    from synapse.modelkit import PlatformEvent

    with pytest.raises(TypeError, match="takes no data"):
        await bus.publish(PlatformEvent(service="api"), {"x": 1})
    await bus.close()


async def test_invalid_entry_is_dead_lettered_for_the_service(url: str, r: redis.Redis) -> None:
    """An entry that is no event (bad JSON) is dead-lettered at once, naming the consumer."""
    bus = Bus("svc", url=url, register=False, block_ms=100)
    seen: list[Event] = []

    @bus.subscribe("jobs")
    async def handle(event: Event) -> None:
        seen.append(event)

    async with serving(bus):
        r.xadd("jobs", {"type": "a.b", "data": "{not json"})
        r.xadd("jobs", {"type": "a.b", "data": "{}"})
        await wait_for(lambda: len(seen) == 1 and r.exists("synapse:dlq") == 1)
        await wait_for(lambda: r.xpending("jobs", "svc")["pending"] == 0)
    [(_, letter)] = r.xrange("synapse:dlq")
    assert letter[b"synapse-reason"] == b"invalid_json"
    assert letter[b"synapse-consumer"] == b"svc" and letter[b"synapse-deliveries"] == b"1"


async def test_crash_looping_entry_is_dead_lettered_after_max_deliveries(
    url: str, r: redis.Redis
) -> None:
    """An entry delivered past max_deliveries (its handler kept killing instances) is parked."""
    r.xgroup_create("jobs", "svc", id="$", mkstream=True)
    entry = r.xadd("jobs", {"type": "a.b", "data": "{}"})
    r.xreadgroup("svc", "dead-1", {"jobs": ">"})
    for _ in range(5):  # five more deliveries to dead instances: 6 in all
        r.xclaim("jobs", "svc", "dead-2", 0, [entry])
    bus = Bus("svc", url=url, register=False, block_ms=100)
    called: list[Event] = []

    @bus.subscribe("jobs", claim_idle_ms=50, max_deliveries=5)
    async def handle(event: Event) -> None:
        called.append(event)

    async with serving(bus):
        await wait_for(lambda: r.exists("synapse:dlq") == 1)
        await wait_for(lambda: r.xpending("jobs", "svc")["pending"] == 0)
    assert called == []
    [(_, letter)] = r.xrange("synapse:dlq")
    assert letter[b"synapse-reason"] == b"max_deliveries"
    assert int(letter[b"synapse-deliveries"]) == 7


async def test_refused_dead_letter_keeps_the_entry_pending(url: str, r: redis.Redis) -> None:
    """A dead-letter stream that is not a stream: nothing is acked, the entry stays pending."""
    r.set("synapse:dlq", "not a stream")
    bus = Bus("svc", url=url, register=False, block_ms=100)

    @bus.subscribe("jobs", max_deliveries=1)
    async def handle(event: Event) -> None:
        raise RuntimeError("no")

    async with serving(bus):
        await bus.publish("a.b", {}, stream="jobs")
        await wait_for(lambda: bus.subscriber is not None and bus.subscriber.io.acks.refused == 1)
        assert r.xpending("jobs", "svc")["pending"] == 1
    assert r.type("synapse:dlq") == b"string"


async def test_sigterm_in_process_stops_run(url: str) -> None:
    """stop() while a handler runs: the handler finishes, run() returns."""
    bus = Bus("svc", url=url, register=False, block_ms=100)
    finished: list[int] = []
    started = asyncio.Event()

    @bus.subscribe("jobs")
    async def handle(event: Event) -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.append(1)

    task = asyncio.create_task(bus.run())
    await wait_for(lambda: bus.subscriber is not None and bus.subscriber.ready)
    await bus.publish("a.b", {}, stream="jobs")
    await asyncio.wait_for(started.wait(), 10)
    bus.stop()
    await asyncio.wait_for(task, 10)
    assert finished == [1]


async def test_publish_retries_with_the_same_id_while_the_server_is_down(tmp_path: Path) -> None:
    """A publish sent while Redis is down is re-sent when it is back: one entry, one id."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from synapse.backoff import Backoff
    from synapse.client.publisher import Publisher
    from synapse.embedded import EmbeddedServer
    from synapse.wire import connect_any

    srv = EmbeddedServer(data_dir=tmp_path / "redis").start()
    srv.stop()
    client = connect_any(srv.url, read_timeout_s=5)
    failing = Publisher("svc", checker=None, stream="ingress", attempts=1)
    with pytest.raises(RedisConnectionError):
        await failing.publish(client, "a.b", {"n": 1})
    patient = Publisher(
        "svc", checker=None, stream="ingress", attempts=50, backoff=Backoff(base_s=0.1, cap_s=0.1)
    )
    task = asyncio.create_task(patient.publish(client, "a.b", {"n": 1}))
    await asyncio.sleep(0.3)
    assert not task.done()  # still retrying
    srv.start()
    try:
        event_id = await asyncio.wait_for(task, 30)
        sync = redis.Redis.from_url(srv.url)
        [(_, fields)] = sync.xrange("ingress")
        assert fields[b"id"].decode() == event_id
        sync.close()
    finally:
        await client.aclose()
        srv.stop()
