"""Reclaim and poison: a dead consumer's entries, an undeliverable entry, a deleted one."""

from __future__ import annotations

import json
import signal
import time

import pytest
import redis

from tests.reliability.conftest import Scenario
from tests.reliability.harness import DESTINATIONS, DLQ, GROUP
from tests.reliability.ledger import LEDGER_FIELD, Ledger
from tests.support.polling import wait_sync

WORKING = tuple(d for d in DESTINATIONS if d != "audit-events")  # audit-events: a string
POISON = {"type": "audit.login", "data": json.dumps({"user": "u"})}


def pending_of(client: redis.Redis, consumer: str) -> list[bytes]:
    rows = client.xpending_range("ingress", GROUP, "-", "+", 100_000, consumername=consumer)
    return [row["message_id"] for row in rows]


@pytest.mark.slow
def test_survivor_reclaims_every_entry_of_a_killed_router(scenario: Scenario) -> None:
    """Two routers in one group; one dies holding pending entries; the other routes them all."""
    scenario.routes(claim_idle_ms=1000)
    client = scenario.client
    ledger = Ledger()
    scenario.produce(ledger, scenario.mixed(30_000), chunk=1000)
    # The victim starts first and is caught holding entries while the survivor starts: a
    # survivor started first could drain the whole backlog before the victim's first read
    # on a loaded machine (seen once).
    victim = scenario.router("victim")
    survivor = scenario.router("survivor", wait_ready=False)
    held: list[bytes] = []
    deadline = time.monotonic() + 30
    while not held:  # freeze the victim until it is caught holding entries, then kill it
        assert time.monotonic() < deadline, "victim never held pending entries"
        victim.signal(signal.SIGSTOP)
        time.sleep(0.1)  # a commit the victim sent just before it froze lands meanwhile
        held = pending_of(client, "victim")
        if not held:
            victim.signal(signal.SIGCONT)
            time.sleep(0.01)
    victim.kill()
    assert pending_of(client, "victim") == held
    report = scenario.settle(ledger)
    print(report.line("two_routers_one_killed"), f"held_by_victim={len(held)}")
    assert report.clean, report.examples
    assert pending_of(client, "victim") == []
    reclaimed = survivor.wait_metric("synapse_reclaimed_total", lambda v: v >= len(held))
    print("reclaimed", reclaimed)
    routed = {f[LEDGER_FIELD] for s in (*DESTINATIONS, DLQ) for _, f in client.xrange(s)}
    held_ledger = {client.xrange("ingress", i, i)[0][1][LEDGER_FIELD] for i in held}
    assert held_ledger <= routed
    assert survivor.stop() == 0


@pytest.mark.slow
def test_poison_dead_lettered_after_exactly_max_deliveries_while_rest_flows(
    scenario: Scenario,
) -> None:
    """A destination of the wrong type: DLQ after max_deliveries, reason destination_error."""
    scenario.routes(claim_idle_ms=1000, max_deliveries=3)
    client = scenario.client
    client.set("audit-events", "not a stream")
    router = scenario.router()
    ledger = Ledger()
    scenario.produce(ledger, [(POISON, {DLQ})])
    poison_id = client.xrange("ingress")[-1][0]
    flowed_before_dlq = 0
    seen: set[int] = set()
    while not poison_dead_lettered(client, poison_id):
        scenario.produce(ledger, scenario.mixed(20, seed=flowed_before_dlq))
        rows = client.xpending_range("ingress", GROUP, poison_id, poison_id, 1)
        if rows:
            seen.add(rows[0]["times_delivered"])
        wait_quiescent_except(client, poison_id)
        flowed_before_dlq += 20
        assert flowed_before_dlq < 20_000, "poison never dead-lettered"
        time.sleep(0.05)  # pacing of the producer: ~400 events/s alongside the poison
    report = scenario.settle(ledger, WORKING)
    print(report.line("poison_destination"), f"flowed_meanwhile={flowed_before_dlq}")
    assert report.clean, report.examples
    [(_, dead)] = [e for e in client.xrange(DLQ) if e[1].get(b"synapse-id") == poison_id]
    assert dead[b"synapse-reason"] == b"destination_error"
    assert dead[b"synapse-deliveries"] == b"3"
    assert b"not a stream" in dead[b"synapse-error"]
    assert seen <= {1, 2, 3}  # counted by Redis, one per attempt, never past the limit
    router.wait_metric(
        "synapse_events_dead_lettered_total", lambda v: v == 1, reason="destination_error"
    )
    assert flowed_before_dlq >= 20  # the other events never waited on the poison
    [(_, letter)] = [e for e in client.xrange(DLQ) if e[1].get(b"synapse-id") == poison_id]
    assert letter[b"synapse-destination"] == b"audit-events"  # the refused destination


def poison_dead_lettered(client: redis.Redis, poison_id: bytes) -> bool:
    rows = client.xrevrange(DLQ, count=50) if client.exists(DLQ) else []
    return any(f.get(b"synapse-id") == poison_id for _, f in rows)


def wait_quiescent_except(client: redis.Redis, poison_id: bytes, timeout_s: float = 10) -> None:
    """Everything read and acknowledged but the poison entry (the rest is not blocked by it)."""

    def done() -> bool:
        info = next(g for g in client.xinfo_groups("ingress") if g["name"] == GROUP.encode())
        last = client.xinfo_stream("ingress")["last-generated-id"]
        rows = client.xpending_range("ingress", GROUP, "-", "+", 10)
        ids = {r["message_id"] for r in rows}
        return info["last-delivered-id"] == last and ids <= {poison_id}

    wait_sync(done, timeout_s, "the rest of the stream routed")


@pytest.mark.slow
def test_pending_entry_deleted_or_trimmed_from_source_is_acked_and_counted(
    scenario: Scenario,
) -> None:
    """XDEL and XTRIM of entries still pending: acknowledged, counted as deleted, no crash."""
    scenario.routes(claim_idle_ms=1000, max_deliveries=100)
    client = scenario.client
    client.set("audit-events", "not a stream")
    router = scenario.router()
    ledger = Ledger()
    scenario.produce(ledger, [(POISON, set()), (POISON, set())])
    first, second = (eid for eid, _ in client.xrange("ingress"))
    scenario.produce(ledger, scenario.mixed(200))
    router.wait_metric("synapse_events_retried_total", lambda v: v >= 2, source="ingress")
    wait_sync(
        lambda: (
            {r["message_id"] for r in client.xpending_range("ingress", GROUP, "-", "+", 9)}
            == {first, second}
        ),
        10,
        "only the two poison entries pending",
    )
    client.xdel("ingress", first)
    ms, seq = second.decode().split("-")
    client.xtrim("ingress", minid=f"{ms}-{int(seq) + 1}", approximate=False)
    router.wait_metric("synapse_events_dropped_total", lambda v: v == 2, reason="deleted")
    assert client.xpending("ingress", GROUP)["pending"] == 0
    assert router.alive() and router.readyz() == 200
    scenario.produce(ledger, scenario.mixed(200, seed=9))
    report = scenario.settle(ledger, WORKING)
    print(report.line("pending_deleted"))
    # The events trimmed with the poison were routed before the trim: nothing is lost.
    assert report.clean, report.examples
    assert router.events("pending_entries_deleted")
