"""The registry and the ``synapse`` CLI against a real 3-primary cluster (redis+cluster://)."""

from __future__ import annotations

from redis.cluster import RedisCluster

from synapse import cluster, keys, registry
from tests.cluster.conftest import slot


def test_registry_keys_share_one_slot() -> None:
    """Every registry key carries the {registry} hash tag, so its MULTI stays in one slot."""
    info = registry.ServiceInfo(name="svc", instance="host:1")
    assert slot(info.key) == slot(keys.REGISTRY_INDEX) == slot("{registry}")


async def test_registry_transactions_work_on_a_cluster_client(curl: str, rc: RedisCluster) -> None:
    """register / list / deregister run on a connect_any cluster client, atomically."""
    client = cluster.connect_any(curl, read_timeout_s=5)
    info = registry.ServiceInfo(name="trainer", instance="t-1", consumes=("model-events",))
    try:
        await registry.register(client, info, ttl_s=30)
        [found] = await registry.list_services(client)
        assert found.info.name == "trainer" and found.info.consumes == ("model-events",)
        assert 0 < rc.pttl(info.key) <= 30_000
        await registry.deregister(client, info)
        assert await registry.list_services(client) == []
        assert rc.zcard(keys.REGISTRY_INDEX) == 0
    finally:
        await client.aclose()
