"""Bus against a real server: publish, subscribe, retries, dead letters, dedupe, groups."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
import redis

from synapse.client import Bus, Event, PublishRefused
from tests.client.conftest import serving
from tests.conftest import wait_for, write_table


def entries(r: redis.Redis, stream: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in r.xrange(stream)]


async def test_publish_writes_the_cloudevents_envelope(url: str, r: redis.Redis) -> None:
    """publish adds id, source, time (RFC 3339 UTC) and specversion beside type and data."""
    async with Bus("trainer", url=url, register=False) as bus:
        event_id = await bus.publish("model.ready", {"model_id": "m1"})
        ids = await bus.publish_many([("a.b", {"n": 1}), ("a.c", {"n": 2})])
    [first, second, third] = entries(r, "ingress")
    assert first[b"type"] == b"model.ready" and first[b"data"] == b'{"model_id":"m1"}'
    assert first[b"id"].decode() == event_id and first[b"source"] == b"trainer"
    assert first[b"specversion"] == b"1.0"
    assert first[b"time"].endswith(b"Z") and b"T" in first[b"time"]
    assert [second[b"id"].decode(), third[b"id"].decode()] == ids
    assert [second[b"type"], third[b"type"]] == [b"a.b", b"a.c"]
    assert len({event_id, *ids}) == 3


async def test_publish_refuses_bad_data_types(url: str) -> None:
    """A body that is not a dict raises TypeError and writes nothing."""
    async with Bus("svc", url=url, register=False) as bus:
        with pytest.raises(TypeError, match="must be a dict"):
            await bus.publish("a.b", ["not", "a", "dict"])  # type: ignore[arg-type]


async def test_subscriber_handles_wanted_types_and_skips_others(url: str, r: redis.Redis) -> None:
    """Only events of the subscribed types reach the handler; the rest are acked unseen."""
    bus = Bus("runtime", url=url, register=False, block_ms=200)
    seen: list[Event] = []

    @bus.subscribe("model-events", types="model.ready")
    async def handle(event: Event) -> None:
        seen.append(event)

    async with serving(bus):
        await bus.publish("model.ready", {"model_id": "m1"}, stream="model-events")
        await bus.publish("model.retired", {"model_id": "m0"}, stream="model-events")
        await bus.publish("model.ready", {"model_id": "m2"}, stream="model-events")
        await wait_for(lambda: len(seen) == 2 and bus.subscriber.skipped == 1)  # type: ignore[union-attr]
        await wait_for(lambda: r.xpending("model-events", "runtime")["pending"] == 0)
    assert [e.data["model_id"] for e in seen] == ["m1", "m2"]
    assert seen[0].source == "runtime" and seen[0].stream == "model-events"


async def test_failing_handler_is_retried_then_dead_lettered(url: str, r: redis.Redis) -> None:
    """A raising handler is retried with backoff, then dead-lettered with handler_error."""
    bus = Bus("runtime", url=url, register=False, block_ms=200)
    calls: list[int] = []
    good: list[str] = []

    @bus.subscribe("jobs", max_deliveries=3, retry_backoff_s=0.05)
    async def handle(event: Event) -> None:
        if event.data.get("bad"):
            calls.append(event.deliveries)
            raise ValueError(f"cannot load {event.data['bad']}")
        good.append(event.data["k"])

    async with serving(bus):
        await bus.publish("job.run", {"bad": "x"}, stream="jobs")
        await bus.publish_many([("job.run", {"k": str(i)}) for i in range(5)], stream="jobs")
        await wait_for(lambda: r.xlen("synapse:dlq") == 1 and len(good) == 5)
        await wait_for(lambda: r.xpending("jobs", "runtime")["pending"] == 0)
    assert calls == [1, 2, 3]
    [letter] = entries(r, "synapse:dlq")
    assert letter[b"synapse-reason"] == b"handler_error"
    assert letter[b"synapse-error"] == b"ValueError: cannot load x"  # the traceback's last line
    assert letter[b"synapse-consumer"] == b"runtime"
    assert letter[b"synapse-source"] == b"jobs" and letter[b"synapse-deliveries"] == b"3"
    assert letter[b"type"] == b"job.run"


async def test_dedupe_handles_one_id_once(url: str, r: redis.Redis) -> None:
    """With dedupe_s, an event whose id was handled is acknowledged without the handler."""
    bus = Bus("svc", url=url, register=False, block_ms=200)
    seen: list[str] = []

    @bus.subscribe("jobs", dedupe_s=60)
    async def handle(event: Event) -> None:
        seen.append(event.id or "")

    async with serving(bus):
        await bus.publish("job.run", {"k": 1}, stream="jobs", id="same")
        await bus.publish("job.run", {"k": 1}, stream="jobs", id="same")
        await wait_for(lambda: r.xpending("jobs", "svc")["pending"] == 0 and len(seen) == 1)
        await bus.publish("job.run", {"k": 1}, stream="jobs", id="same")
        await bus.publish("job.run", {"k": 2}, stream="jobs", id="other")
        await wait_for(lambda: len(seen) == 2)
        await wait_for(lambda: bus.subscriber.deduped == 2)  # type: ignore[union-attr]
    assert seen == ["same", "other"]
    assert r.pttl("synapse:dedupe:{svc}:id:same") > 50_000


async def test_sync_handler_runs_in_a_thread_with_bounded_concurrency(url: str) -> None:
    """A sync handler runs off the event loop, never more than `concurrency` at once."""
    bus = Bus("svc", url=url, register=False, block_ms=200)
    lock = threading.Lock()
    now = [0]
    peak = [0]
    threads: set[str] = set()
    done: list[int] = []

    @bus.subscribe("jobs", concurrency=3)
    def handle(event: Event) -> None:
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
            threads.add(threading.current_thread().name)
        threading.Event().wait(0.02)
        with lock:
            now[0] -= 1
            done.append(1)

    async with serving(bus):
        await bus.publish_many([("job.run", {"i": i}) for i in range(30)], stream="jobs")
        await wait_for(lambda: len(done) == 30)
    assert peak[0] == 3
    assert all(name.startswith("synapse-handler") for name in threads)


async def test_lost_group_is_recreated(url: str, r: redis.Redis) -> None:
    """A group destroyed under a running subscriber is recreated; events keep flowing."""
    bus = Bus("svc", url=url, register=False, block_ms=100)
    seen: list[int] = []

    @bus.subscribe("jobs")
    async def handle(event: Event) -> None:
        seen.append(event.data["i"])

    async with serving(bus):
        await bus.publish("job.run", {"i": 1}, stream="jobs")
        await wait_for(lambda: seen == [1])
        r.xgroup_destroy("jobs", "svc")
        await asyncio.sleep(0.3)  # the blocked read notices the missing group
        await wait_for(lambda: any(g["name"] == b"svc" for g in r.xinfo_groups("jobs")))
        await bus.publish("job.run", {"i": 2}, stream="jobs")
        await wait_for(lambda: seen == [1, 2])


TABLE = """
version: 1
sources: [ingress]
schemas:
  "model.*": model.json
routes:
  - name: models
    match: "model.*"
    to: [model-events]
"""
SCHEMA = {
    "type": "object",
    "required": ["model_id", "version"],
    "properties": {"model_id": {"type": "string"}, "version": {"type": "string"}},
}


async def test_config_validates_before_writing(url: str, r: redis.Redis, tmp_path: Path) -> None:
    """Bus(config=) refuses schema violations (every error) and unroutable types; writes none."""
    config = write_table(tmp_path, TABLE, {"model.json": SCHEMA})
    async with Bus("trainer", url=url, config=config, register=False) as bus:
        with pytest.raises(PublishRefused) as bad:
            await bus.publish("model.ready", {"model_id": 3})
        assert bad.value.reason == "schema_violation" and len(bad.value.errors) == 2
        with pytest.raises(PublishRefused) as unrouted:
            await bus.publish("other.thing", {})
        assert unrouted.value.reason == "no_route"
        assert r.exists("ingress") == 0
        await bus.publish("model.ready", {"model_id": "m", "version": "1"})
    async with Bus("trainer", url=url, config=config, strict=False, register=False) as loose:
        await loose.publish("other.thing", {})
    assert r.xlen("ingress") == 2


async def test_bus_registers_itself(url: str, r: redis.Redis) -> None:
    """A Bus registers service, streams published and consumed, group and types."""
    from synapse import registry
    from synapse.wire import connect_any

    bus = Bus("runtime", url=url, block_ms=100)

    @bus.subscribe("model-events", types="model.*")
    async def handle(event: Event) -> None:
        return None

    client = connect_any(url, read_timeout_s=5)
    try:
        async with serving(bus):
            await bus.publish("inference.completed", {"x": 1})

            async def listed() -> bool:
                found = await registry.list_services(client)
                return bool(found) and "inference.completed" in found[0].info.publishes

            await wait_for(listed)
            [reg] = await registry.list_services(client)
            assert reg.info.consumes == ("model-events",) and reg.info.group == "runtime"
            assert reg.info.produces == ("ingress",)
        assert await registry.list_services(client) == []
    finally:
        await client.aclose()
