"""Per-source lag and pending gauges from XINFO GROUPS, refreshed on an interval."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import redis

from synapse.config import RoutingTable
from synapse.consumer import STATS_INTERVAL_S, Router
from synapse.metrics import Metrics
from tests.conftest import write_table
from tests.ops.test_reload import EV_SCHEMA, TABLE_A, all_acked
from tests.support.router import RouterProcess, key

TWO_SOURCES = TABLE_A.replace("sources: [ingress]", 'sources: [ingress, "ingress:*"]')


def gauge(metrics: Metrics, name: str, source: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"source": source})


async def test_refresh_stats_reads_lag_and_pending(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """lag = entries not yet delivered to the group, pending = delivered and not acked."""
    table = table_from(TWO_SOURCES, {"ev.json": EV_SCHEMA})
    r.xadd("ingress:b", {"type": "ev.x", "data": "{}"})  # a globbed source must exist
    metrics = Metrics()
    router = Router(table, url, metrics)
    try:
        await router.setup()  # groups only; no reads
        for i in range(7):
            r.xadd("ingress", {"type": "ev.x", "data": json.dumps({"n": i})})
        r.xreadgroup("synapse-router", "someone-else", {"ingress": ">"}, count=3)
        await router.refresh_stats()
        assert gauge(metrics, "synapse_source_lag", "ingress") == 4
        assert gauge(metrics, "synapse_source_pending", "ingress") == 3
        assert gauge(metrics, "synapse_source_lag", "ingress:b") == 1
        assert gauge(metrics, "synapse_source_pending", "ingress:b") == 0
    finally:
        await router.close()


def test_daemon_exports_lag_and_pending_per_source(
    tmp_path: Path, spawn: Callable[..., RouterProcess], r: redis.Redis
) -> None:
    """A running router exports both gauges per source, refreshed until they show it caught up."""
    r.xadd("ingress:b", {"type": "ev.x", "data": json.dumps({"n": 1})})
    config = write_table(tmp_path / "cfg", TWO_SOURCES, {"ev.json": EV_SCHEMA})
    router = spawn(config)
    router.wait_ready()
    # The first refresh runs before the first read: the waiting entry shows as lag.
    router.wait_scrape({key("synapse_source_lag", source="ingress:b"): 1})
    for i in range(50):
        r.xadd("ingress", {"type": "ev.x", "data": json.dumps({"n": i})})
    router.wait_scrape(
        {
            key("synapse_source_lag", source="ingress"): 0,
            key("synapse_source_pending", source="ingress"): 0,
            key("synapse_source_lag", source="ingress:b"): 0,
            key("synapse_source_pending", source="ingress:b"): 0,
        },
        timeout_s=STATS_INTERVAL_S * 2 + 5,
    )
    assert all_acked(r) and all_acked(r, "ingress:b")
    assert router.stop() == 0
