"""kill -9 of the router, again and again, while it drains: nothing lost, nothing twice."""

from __future__ import annotations

import random

import pytest
import redis

from tests.reliability.conftest import Scenario
from tests.reliability.harness import DLQ, GROUP
from tests.reliability.ledger import Ledger, group_state
from tests.support.polling import wait_sync

EVENTS = 50_000
KILLS = 6


def lag_of(client: redis.Redis) -> tuple[int, int]:
    """(entries not yet read by the group, entries pending)."""
    for info in client.xinfo_groups("ingress"):
        if info["name"] == GROUP.encode():
            return int(info.get("lag") or 0), int(info["pending"])
    return EVENTS, 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_router_killed_repeatedly_loses_and_duplicates_nothing(scenario: Scenario) -> None:
    """Six kill -9s at random points of a 50k drain: every event routed exactly once."""
    scenario.routes(claim_idle_ms=1000, max_deliveries=10)
    client = scenario.client
    ledger = Ledger()
    scenario.produce(ledger, scenario.mixed(EVENTS), chunk=1000)
    rng = random.Random(1)
    targets = sorted(rng.uniform(0.05, 0.8) for _ in range(KILLS))
    kills_mid_batch = 0
    for target in targets:
        router = scenario.router(wait_ready=False)
        wait_sync(
            lambda t=target, p=router: 1 - lag_of(client)[0] / EVENTS >= t or not p.alive(),
            timeout_s=60,
            what=f"{target:.0%} read",
            step_s=0.003,
        )
        assert router.alive(), router.tail()
        lag, pending = lag_of(client)
        router.kill()
        assert lag > 0, "killed after the drain finished: the kill proves nothing"
        kills_mid_batch += pending > 0
    assert kills_mid_batch >= 2  # entries were in flight at (most) kills
    final = scenario.router()
    report = scenario.settle(ledger, timeout_s=120)
    assert final.stop() == 0
    print(report.line("router_kill9"), f"kills={KILLS} mid_batch={kills_mid_batch}")
    assert report.clean, report.examples
    assert report.events == EVENTS
    assert group_state(client, "ingress", GROUP) == (0, True)
    # Only invalid/unrouted kinds are dead-lettered: no crash turned into max_deliveries.
    reasons = {f[b"synapse-reason"] for _, f in client.xrange(DLQ, count=EVENTS)}
    assert reasons <= {b"no_route", b"invalid_json"}, reasons
