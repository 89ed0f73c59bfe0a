"""Backpressure and bounds: flat memory under a big backlog; too-large events never copied whole."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import psutil
import pytest
import redis

from synapse.config import RoutingTable
from synapse.events import DLQ_FIELD_MAX
from tests.conftest import running, wait_for
from tests.reliability.conftest import Scenario
from tests.reliability.harness import DESTINATIONS, DLQ, GROUP
from tests.reliability.ledger import Ledger, check, quiescent, wait_quiescent
from tests.support.polling import wait_sync

BACKLOG = 120_000


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_memory_stays_flat_while_a_large_backlog_drains(scenario: Scenario) -> None:
    """120k events queued far faster than routed: router RSS grows by a bounded amount only."""
    scenario.routes(batch=500)
    client = scenario.client
    router = scenario.router()
    proc = psutil.Process(router.pid)
    baseline = proc.memory_info().rss
    ledger = Ledger()
    scenario.produce(ledger, scenario.mixed(5_000, seed=11), chunk=1000)
    wait_quiescent(client, ["ingress"], GROUP)  # warm: imports, caches, first batches done
    warm = proc.memory_info().rss
    scenario.produce(ledger, scenario.mixed(BACKLOG, seed=12), chunk=2000)
    samples = []
    wait_sync(
        lambda: samples.append(proc.memory_info().rss) or quiescent(client, ["ingress"], GROUP),
        timeout_s=120,
        what="backlog drained",
        step_s=0.1,
    )
    report = check(client, ledger, DESTINATIONS, DLQ)
    peak_growth_mb = (max(samples) - warm) / 2**20
    print(
        report.line("backlog_memory"),
        f"rss_baseline_mb={baseline / 2**20:.0f} rss_warm_mb={warm / 2**20:.0f}",
        f"rss_peak_growth_mb={peak_growth_mb:.1f}",
    )
    assert report.clean, report.examples
    # Work in flight is one batch per source: the backlog (≈45 MB in Redis) never enters RSS.
    assert peak_growth_mb < 25, peak_growth_mb


async def test_too_large_event_is_dead_lettered_truncated_with_its_sha256(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """A 3 MB event goes to the DLQ as too_large with its big field cut and hashed, not copied."""
    table = table_from(
        """
        version: 1
        router: {block_ms: 100, max_event_bytes: 100000}
        sources: [ingress]
        routes: [{name: all, match: "*", to: [out]}]
        """
    )
    blob = json.dumps({"pad": "x" * 3_000_000})
    async with running(table, url):
        eid = r.xadd("ingress", {"type": "big.event", "data": blob})
        r.xadd("ingress", {"type": "small.event", "data": "{}"})
        await wait_for(lambda: r.exists(DLQ) and r.exists("out"), what="both handled")
    [(_, dead)] = r.xrange(DLQ)
    assert dead[b"synapse-reason"] == b"too_large"
    assert dead[b"synapse-id"] == eid
    assert len(dead[b"data"]) == DLQ_FIELD_MAX
    assert dead[b"synapse-sha256:data"] == hashlib.sha256(blob.encode()).hexdigest().encode()
    assert b"data:" in dead[b"synapse-truncated"]
    assert r.memory_usage(DLQ) < 100_000  # the dead letter is small
    assert r.xlen("out") == 1
