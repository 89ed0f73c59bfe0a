"""A primary killed while events flow: its replica takes over, the ledger shows nothing lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.cluster import RedisCluster
from redis.exceptions import RedisError

from synapse import cluster
from synapse.config import RoutingTable
from synapse.metrics import Metrics
from tests.cluster.ledger import Ledger
from tests.cluster.localcluster import LocalCluster
from tests.conftest import running, wait_for

TABLE = """
    version: 1
    router: {block_ms: 100, claim_idle_ms: 1000, rescan_interval_ms: 500, batch: 50}
    sources: ["{a}:in", b-in]
    routes:
      - name: atomic
        match: "a.*"
        to: ["{a}:out"]
      - name: spread
        match: "b.*"
        to: ["{a}:copy", c-out]
"""
EVENTS = 2400
BATCH = 50


@pytest.fixture(scope="module")
def ha_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three primaries with one replica each, a 1 s node timeout for quick failover."""
    found = LocalCluster(tmp_path_factory.mktemp("ha"), primaries=3, replicas=1).start()
    yield found
    found.stop()


async def produce(client: Any, produced: dict[str, list[bytes]], kill_at: int) -> None:
    """Write EVENTS events (alternating sources), retrying each until the cluster takes it."""
    for n in range(EVENTS):
        source, kind = ("{a}:in", "a.x") if n % 2 else ("b-in", "b.x")
        while True:
            try:
                produced[source].append(await client.xadd(source, {"type": kind, "n": str(n)}))
                break
            except RedisError:
                await asyncio.sleep(0.05)
        if n % 20 == 0:
            await asyncio.sleep(0.005)
        if n == kill_at:
            produced["kill"] = []


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_primary_killed_while_events_flow(
    ha_cluster: LocalCluster, table_from: Callable[..., RoutingTable], tmp_path: Path
) -> None:
    """Kill the primary of the atomic route's slot mid-stream: no loss; dups only across slots."""
    victim = ha_cluster.node_for("{a}:in")
    assert ha_cluster.node_for("b-in") is not victim
    producer = cluster.connect_any(ha_cluster.url, read_timeout_s=2)
    produced: dict[str, list[bytes]] = {"{a}:in": [], "b-in": []}
    metrics = Metrics()
    async with running(table_from(TABLE), ha_cluster.url, metrics=metrics) as router:
        writing = asyncio.create_task(produce(producer, produced, EVENTS // 3))
        await wait_for(lambda: "kill" in produced or writing.done(), 30, "a third produced")
        victim.kill()
        killed_at = time.monotonic()
        await wait_for(lambda: writing.done(), 60, "producer done")
        writing.result()
        ha_cluster.wait_ok()
        failover_s = time.monotonic() - killed_at
        sync = RedisCluster(host="127.0.0.1", port=ha_cluster.primary_nodes()[0].port)
        await wait_for(lambda: _drained(sync, ["{a}:in", "b-in"]), 60, "drained after failover")
        assert router.ready
    await producer.aclose()
    present = {s: [i for i, _ in sync.xrange(s)] for s in ("{a}:in", "b-in")}
    for source, ids in produced.items():
        if source != "kill":
            assert set(ids) <= set(present[source])  # the cluster kept what it acknowledged
    ledger = Ledger()
    ledger.expect("{a}:out", "{a}:in", present["{a}:in"])
    ledger.expect("{a}:copy", "b-in", present["b-in"])
    ledger.expect("c-out", "b-in", present["b-in"])
    for dest in ("{a}:out", "{a}:copy", "c-out"):
        ledger.scan(sync, dest)
    summary = ledger.summary()
    print("ledger", summary, "failover_s", round(failover_s, 2))
    assert summary["LOST"] == {} and summary["UNEXPECTED"] == {}
    assert "{a}:out" not in summary["DUPLICATED"]  # atomic route: exactly once
    assert all(n <= 2 * BATCH for n in summary["DUPLICATED"].values())  # within the in-flight
    sync.close()


def _drained(rc: RedisCluster, sources: list[str]) -> bool:
    try:
        for source in sources:
            groups = rc.xinfo_groups(source)
            if not groups or groups[0]["pending"] or groups[0]["lag"]:
                return False
    except RedisError:
        return False
    return True
