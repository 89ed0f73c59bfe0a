"""Reclaim and poison: a dead consumer's entries, an undeliverable entry, a deleted one."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from synapse.embedded import EmbeddedServer
from tests.reliability.harness import (
    DESTINATIONS,
    DLQ,
    GROUP,
    RouterProcess,
    mixed,
    wait_until,
    write_routes,
)
from tests.reliability.ledger import LEDGER_FIELD, Ledger, check, produce, wait_quiescent

WORKING = tuple(d for d in DESTINATIONS if d != "audit-events")  # audit-events: a string
POISON = {"type": "audit.login", "data": json.dumps({"user": "u"})}


def pending_of(client: redis.Redis, consumer: str) -> list[bytes]:
    rows = client.xpending_range("ingress", GROUP, "-", "+", 100_000, consumername=consumer)
    return [row["message_id"] for row in rows]


@pytest.mark.slow
def test_survivor_reclaims_every_entry_of_a_killed_router(
    tmp_path: Path,
    own_server: EmbeddedServer,
    client: redis.Redis,
    routers: Callable[..., RouterProcess],
) -> None:
    """Two routers in one group; one dies holding pending entries; the other routes them all."""
    config, table = write_routes(tmp_path / "cfg", claim_idle_ms=1000)
    ledger = Ledger()
    produce(client, ledger, "ingress", mixed(table, 30_000), chunk=1000)
    survivor = routers(config, own_server.url, consumer="survivor").start()
    victim = routers(config, own_server.url, consumer="victim").start()
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
    wait_quiescent(client, ["ingress"], GROUP, timeout_s=60)
    report = check(client, ledger, DESTINATIONS, DLQ)
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
    tmp_path: Path,
    own_server: EmbeddedServer,
    client: redis.Redis,
    routers: Callable[..., RouterProcess],
) -> None:
    """A destination of the wrong type: DLQ after max_deliveries, reason destination_error."""
    config, table = write_routes(tmp_path / "cfg", claim_idle_ms=1000, max_deliveries=3)
    client.set("audit-events", "not a stream")
    router = routers(config, own_server.url).start()
    ledger = Ledger()
    produce(client, ledger, "ingress", [(POISON, {DLQ})])
    poison_id = client.xrange("ingress")[-1][0]
    flowed_before_dlq = 0
    seen: set[int] = set()
    while not poison_dead_lettered(client, poison_id):
        produce(client, ledger, "ingress", mixed(table, 20, seed=flowed_before_dlq))
        rows = client.xpending_range("ingress", GROUP, poison_id, poison_id, 1)
        if rows:
            seen.add(rows[0]["times_delivered"])
        wait_quiescent_except(client, poison_id)
        flowed_before_dlq += 20
        assert flowed_before_dlq < 20_000, "poison never dead-lettered"
        time.sleep(0.05)  # pacing of the producer: ~400 events/s alongside the poison
    wait_quiescent(client, ["ingress"], GROUP)
    report = check(client, ledger, WORKING, DLQ)
    print(report.line("poison_destination"), f"flowed_meanwhile={flowed_before_dlq}")
    assert report.clean, report.examples
    [(_, dead)] = [e for e in client.xrange(DLQ) if e[1].get(b"synapse-id") == poison_id]
    assert dead[b"synapse-reason"] == b"destination_error"
    assert dead[b"synapse-deliveries"] == b"3"
    assert b"not a stream" in dead[b"synapse-error"]
    assert seen <= {1, 2, 3} and 2 in seen  # counted by Redis, one per (re)delivery
    router.wait_metric(
        "synapse_events_dead_lettered_total", lambda v: v == 1, reason="destination_error"
    )
    assert flowed_before_dlq >= 100  # the other events never waited on the poison


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

    wait_until(done, timeout_s, "the rest of the stream routed")


@pytest.mark.slow
def test_pending_entry_deleted_or_trimmed_from_source_is_acked_and_counted(
    tmp_path: Path,
    own_server: EmbeddedServer,
    client: redis.Redis,
    routers: Callable[..., RouterProcess],
) -> None:
    """XDEL and XTRIM of entries still pending: acknowledged, counted as deleted, no crash."""
    config, table = write_routes(tmp_path / "cfg", claim_idle_ms=1000, max_deliveries=100)
    client.set("audit-events", "not a stream")
    router = routers(config, own_server.url).start()
    ledger = Ledger()
    produce(client, ledger, "ingress", [(POISON, set()), (POISON, set())])
    first, second = (eid for eid, _ in client.xrange("ingress"))
    produce(client, ledger, "ingress", mixed(table, 200))
    router.wait_metric("synapse_events_retried_total", lambda v: v >= 2, source="ingress")
    wait_until(
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
    produce(client, ledger, "ingress", mixed(table, 200, seed=9))
    wait_quiescent(client, ["ingress"], GROUP)
    report = check(client, ledger, WORKING, DLQ)
    print(report.line("pending_deleted"))
    # The events trimmed with the poison were routed before the trim: nothing is lost.
    assert report.clean, report.examples
    assert router.events("pending_entries_deleted")
