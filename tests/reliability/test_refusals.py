"""Refusals under load: a destination that can never be written, and a server out of memory."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator

import pytest
import redis

from synapse.config import RoutingTable
from tests.reliability.conftest import Scenario
from tests.reliability.harness import DESTINATIONS, DLQ, GROUP
from tests.reliability.ledger import Fields, Ledger, expect_of, read_ids
from tests.support.polling import wait_sync

EVENTS = 20_000
MAX_ID = "18446744073709551615-18446744073709551615"


def routable(table: RoutingTable, n: int, seed: int = 3) -> Iterator[tuple[Fields, frozenset[str]]]:
    """``n`` valid events with fan-out 1 to 3: none of them belongs in the dead-letter stream."""
    rng = random.Random(seed)
    kinds = [
        ("model.ready", {"model_id": "m", "stage": "production"}),  # 3 destinations
        ("model.ready", {"model_id": "m", "stage": "staging"}),  # 2
        ("model.updated", {"model_id": "m"}),  # 2
        ("app.error", {"code": 500}),  # 1
    ]
    expected: dict[int, frozenset[str]] = {}
    for _ in range(n):
        k = rng.randrange(len(kinds))
        event_type, body = kinds[k]
        fields = {"type": event_type, "data": json.dumps({**body, "n": rng.randrange(10**6)})}
        if k not in expected:
            expected[k] = expect_of(table, "ingress", fields)
        yield fields, expected[k]


def read_fraction(client: redis.Redis) -> float:
    for info in client.xinfo_groups("ingress"):
        if info["name"] == GROUP.encode():
            return 1 - int(info.get("lag") or 0) / EVENTS
    return 0.0


def oom_for(client: redis.Redis, seconds: float, at_limit: bool) -> int:
    """Refuse writes for ``seconds`` (noeviction): maxmemory 1 (every write refused), or
    ``at_limit``, maxmemory = the memory in use when the fault starts (small writes may
    pass, a batch's commit does not: memory hovering at the limit). The limit set."""
    client.config_set("maxmemory-policy", "noeviction")
    limit = int(client.info("memory")["used_memory"]) if at_limit else 1
    try:
        client.config_set("maxmemory", limit)
        time.sleep(seconds)  # the fault's duration
    finally:
        client.config_set("maxmemory", 0)
    return limit


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("at_limit", [False, True], ids=["everything_refused", "at_the_limit"])
def test_ten_seconds_of_oom_mid_drain_loses_duplicates_and_dead_letters_nothing(
    scenario: Scenario, at_limit: bool
) -> None:
    """maxmemory + noeviction for 10 s (every write refused, or memory at the limit) in
    the middle of a 20k drain: the router backs off as not ready, then routes every event
    once; none is dead-lettered (re-reads after an outage never count as deliveries)."""
    table = scenario.routes(claim_idle_ms=1000, max_deliveries=3)
    client = scenario.client
    ledger = Ledger()
    scenario.produce(ledger, routable(table, EVENTS), chunk=1000)
    router = scenario.router()
    wait_sync(lambda: read_fraction(client) >= 0.3, 60, "30% read", step_s=0.005)
    read_at = read_fraction(client)
    limit = oom_for(client, 10.0, at_limit)  # 10 s of refused writes
    assert router.alive()
    wait_sync(lambda: router.readyz() == 200, 20, "ready again by itself")
    report = scenario.settle(ledger, timeout_s=120)
    name = f"oom_10s_{'at_limit' if at_limit else 'all_refused'}_mid_drain"
    print(report.line(name), f"read_at_oom={read_at:.0%} maxmemory={limit}")
    assert report.clean, report.examples
    assert report.events == EVENTS and report.dead_lettered == 0
    assert router.metric("synapse_redis_errors_total", kind="outage") >= 1
    assert router.events("redis_unavailable")  # reported not ready meanwhile
    assert router.stop() == 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_exhausted_destination_during_a_drain_never_acks_a_partial_fan_out(
    scenario: Scenario,
) -> None:
    """platform-events can take no more IDs during a 20k drain: no event loses a copy, none
    is written twice; each bound there gets its other copies and one dead letter naming it."""
    table = scenario.routes(claim_idle_ms=1000, max_deliveries=3)
    client = scenario.client
    client.xadd("platform-events", {"x": "1"}, id=MAX_ID)
    ledger = Ledger()
    scenario.produce(ledger, routable(table, EVENTS), chunk=1000)
    router = scenario.router()
    report = scenario.settle(ledger, timeout_s=120)
    dead = read_ids(client, DLQ)
    print(report.line("exhausted_destination"), f"dead_letters={sum(dead.values())}")
    assert report.clean, report.examples
    bound_there = {s.ledger_id for s in ledger.attempted.values() if "platform-events" in s.expect}
    assert set(dead) == bound_there and set(dead.values()) == {1}
    for stream in ("model-events", "all-events"):  # their writable copies, exactly once
        assert bound_there <= set(read_ids(client, stream))
    letters = [f for _, f in client.xrange(DLQ, count=EVENTS)]
    assert {f[b"synapse-destination"] for f in letters} == {b"platform-events"}
    assert {f[b"synapse-reason"] for f in letters} == {b"destination_error"}
    assert {f[b"synapse-deliveries"] for f in letters} == {b"3"}
    assert client.xlen("platform-events") == 1
    assert router.stop() == 0
    assert set(DESTINATIONS) >= {"model-events", "all-events", "platform-events"}
