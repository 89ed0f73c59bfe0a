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

from synapse import wire
from synapse.config import RoutingTable
from synapse.metrics import Metrics
from tests.cluster.localcluster import LocalCluster
from tests.conftest import running, wait_for
from tests.reliability.ledger import LEDGER_FIELD, Ledger, check, expect_of, quiescent

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
GROUP = "synapse-router"


@pytest.fixture(scope="module")
def ha_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three primaries with one replica each, a 1 s node timeout for quick failover."""
    found = LocalCluster(tmp_path_factory.mktemp("ha"), primaries=3, replicas=1).start()
    yield found
    found.stop()


async def produce(
    client: Any, table: RoutingTable, ledger: Ledger, produced: dict[str, list[bytes]], kill_at: int
) -> None:
    """Write EVENTS events (alternating sources), retrying each until the cluster takes it.

    Each attempt is tagged afresh: a retry after a lost reply is another event, as it is
    another entry in the source.
    """
    kinds = {"{a}:in": "a.x", "b-in": "b.x"}
    expect = {s: expect_of(table, s, {"type": kind}) for s, kind in kinds.items()}
    for n in range(EVENTS):
        source = "{a}:in" if n % 2 else "b-in"
        while True:
            fields = ledger.tag(source, {"type": kinds[source], "n": str(n)}, expect[source])
            try:
                produced[source].append(await client.xadd(source, fields))
                ledger.acked.add(fields[LEDGER_FIELD])
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
    producer = wire.connect_any(ha_cluster.url, read_timeout_s=2)
    produced: dict[str, list[bytes]] = {"{a}:in": [], "b-in": []}
    metrics = Metrics()
    table = table_from(TABLE)
    ledger = Ledger()
    async with running(table, ha_cluster.url, metrics=metrics) as router:
        writing = asyncio.create_task(produce(producer, table, ledger, produced, EVENTS // 3))
        await wait_for(lambda: "kill" in produced or writing.done(), 30, "a third produced")
        victim.kill()
        killed_at = time.monotonic()
        await wait_for(lambda: writing.done(), 60, "producer done")
        writing.result()
        ha_cluster.wait_ok()
        failover_s = time.monotonic() - killed_at
        sync = RedisCluster(host="127.0.0.1", port=ha_cluster.primary_nodes()[0].port)
        sources = ["{a}:in", "b-in"]
        await wait_for(lambda: quiescent(sync, sources, GROUP), 60, "drained after failover")
        assert router.ready
    await producer.aclose()
    present = {s: dict(sync.xrange(s)) for s in sources}
    for source, ids in produced.items():
        if source != "kill":
            assert set(ids) <= set(present[source])  # the cluster kept what it acknowledged
    # Every entry the sources hold must be routed, acknowledged at XADD or not.
    ledger.acked |= {f[LEDGER_FIELD] for entries in present.values() for f in entries.values()}
    report = check(sync, ledger, ["{a}:out", "{a}:copy", "c-out"])
    print(report.line("cluster_failover"), "failover_s", round(failover_s, 2))
    assert report.lost == report.unexpected == 0, report.examples
    assert "{a}:out" not in report.duplicated_in  # atomic route: exactly once
    assert all(n <= 2 * BATCH for n in report.duplicated_in.values())  # within the in-flight
    sync.close()
