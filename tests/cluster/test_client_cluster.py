"""synapse.client on Redis Cluster: publish, subscribe, dead letters and dedupe across slots."""

from __future__ import annotations

from redis.cluster import RedisCluster

from synapse.client import Bus, Event
from tests.client.conftest import serving
from tests.conftest import wait_for


async def test_publish_subscribe_dead_letter_and_dedupe_on_a_cluster(
    curl: str, rc: RedisCluster
) -> None:
    """The same API on a cluster: handled, dead-lettered, deduplicated; nothing left pending."""
    bus = Bus("svc", url=curl, block_ms=100)
    seen: list[str] = []

    @bus.subscribe("jobs", max_deliveries=2, retry_backoff_s=0.05, dedupe_s=60)
    async def handle(event: Event) -> None:
        if event.data.get("bad"):
            raise RuntimeError("bad one")
        seen.append(event.id or "")

    async with serving(bus):
        ids = await bus.publish_many([("job.run", {"n": i}) for i in range(50)], stream="jobs")
        await bus.publish("job.run", {"n": 0}, stream="jobs", id=ids[0])  # a retried publish
        await bus.publish("job.run", {"bad": True}, stream="jobs")
        await wait_for(lambda: len(seen) == 50 and rc.exists("synapse:dlq") == 1)
        await wait_for(lambda: rc.xpending("jobs", "svc")["pending"] == 0)
        await wait_for(lambda: bus.subscriber is not None and bus.subscriber.deduped == 1)
    assert sorted(seen) == sorted(ids)
    [(_, letter)] = rc.xrange("synapse:dlq")
    assert letter[b"synapse-reason"] == b"handler_error"
    assert letter[b"synapse-consumer"] == b"svc"
