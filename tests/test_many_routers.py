"""Many routers in one group: shared work, unique consumer names, reclaim, cleanup."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from synapse import keys, membership
from synapse.config import RoutingTable
from synapse.errors import ConsumerInUse
from tests.conftest import running, wait_for, wait_sync, write_table
from tests.reliability.ledger import Ledger, check, produce, quiescent
from tests.support.router import RouterProcess

TABLE = """
    version: 1
    router: {block_ms: 100, claim_idle_ms: 300, rescan_interval_ms: 200, batch: 20}
    sources: [ingress]
    routes:
      - name: all
        match: "*"
        to: [out-a, out-b]
"""
GROUP = "synapse-router"
BOTH = {"out-a", "out-b"}


def consumers(r: redis.Redis, source: str = "ingress") -> dict[str, int]:
    """Consumer name -> pending count."""
    return {c["name"].decode(): int(c["pending"]) for c in r.xinfo_consumers(source, GROUP)}


def drained(r: redis.Redis) -> bool:
    """Every ingress entry read and acknowledged by the group."""
    return quiescent(r, ["ingress"], GROUP)


@pytest.mark.slow
def test_two_router_processes_share_a_group(tmp_path: Path, url: str, r: redis.Redis) -> None:
    """Two real routers in one group route every event exactly once, and both do work."""
    config = write_table(tmp_path / "cfg", TABLE)
    routers = [
        RouterProcess(config, url, consumer=name, log_path=tmp_path / f"{name}.log").start()
        for name in ("r1", "r2")
    ]
    try:
        wait_sync(lambda: all(r.exists(keys.consumer_lease(GROUP, n)) for n in ("r1", "r2")))
        ledger = Ledger()
        for burst in range(40):
            events = [({"type": "t", "n": f"{burst}.{i}"}, BOTH) for i in range(25)]
            produce(r, ledger, "ingress", events)
            wait_sync(lambda: drained(r), 10, "burst routed")
        assert {"r1", "r2"} <= set(consumers(r))
        routed = {p.consumer: p.total("synapse_events_consumed_total") for p in routers}
    finally:
        codes = [p.stop() for p in routers]
    assert codes == [0, 0]
    assert all(n > 0 for n in routed.values()), routed
    report = check(r, ledger, BOTH)
    assert report.clean and report.events == 1000, report.examples
    assert not r.keys("synapse:consumer:*")  # clean stops free their names
    assert consumers(r) == {}  # and leave the group (nothing pending)


@pytest.mark.slow
def test_second_router_under_a_live_name_is_refused(
    tmp_path: Path, url: str, r: redis.Redis
) -> None:
    """A router started under a consumer name a live router holds exits 75 and routes nothing."""
    config = write_table(tmp_path / "cfg", TABLE)
    first = RouterProcess(config, url, consumer="same", log_path=tmp_path / "a.log").start()
    try:
        wait_sync(lambda: r.exists(keys.consumer_lease(GROUP, "same")) == 1)
        second = RouterProcess(config, url, consumer="same", log_path=tmp_path / "b.log").start()
        assert second.wait(30) == 75
        assert "consumer_name_in_use" in second.text()
        assert first.alive()  # the holder keeps running
        r.xadd("ingress", {"type": "t"})
        wait_sync(lambda: drained(r) and r.xlen("out-a") == 1, 10, "routed by the holder")
    finally:
        assert first.stop() == 0


async def test_lease_of_a_dead_local_process_is_taken_over(r: redis.Redis) -> None:
    """A lease left by a dead process on this host is taken at once; a live one refuses."""
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await dead.wait()
    lease = membership.ConsumerLease(GROUP, "n1")
    host = lease.value.split(b" ")[0]
    r.set(lease.key, host + f" {dead.pid} old".encode(), px=60_000)
    client = _async(r)
    try:
        assert await lease.acquire(client) == f"{host.decode()} pid {dead.pid}"
        assert r.get(lease.key) == lease.value
        other = membership.ConsumerLease(GROUP, "n1")
        with pytest.raises(ConsumerInUse, match="in use by"):
            await other.acquire(client)  # we are alive: refused
    finally:
        await client.aclose()


async def test_lease_from_another_host_waits_for_its_ttl(r: redis.Redis) -> None:
    """A lease held on another host is respected until it expires, then taken."""
    lease = membership.ConsumerLease(GROUP, "n2")
    r.set(lease.key, b"elsewhere 1 tok", px=300)
    client = _async(r)
    try:
        with pytest.raises(ConsumerInUse, match="elsewhere"):
            await lease.acquire(client)
        await wait_for(lambda: not r.exists(lease.key), 5, "lease expiry")
        assert await lease.acquire(client) is None
        assert r.pttl(lease.key) > 0
    finally:
        await client.aclose()


async def test_router_stops_when_its_name_is_taken(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """A router whose lease is taken by another process stops routing and reports the failure."""
    table = table_from(TABLE)
    async with running(table, url, consumer="mine", lease_ttl_ms=600) as router:
        r.set(router.backend.lease.key, b"elsewhere 1 tok", px=60_000)
        await wait_for(lambda: router.failure is not None, 5, "renewal notices")
        assert isinstance(router.failure, ConsumerInUse)
    assert r.get(router.backend.lease.key) == b"elsewhere 1 tok"  # never released: not ours


async def test_dead_routers_pending_entries_are_reclaimed(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """Entries a dead consumer read but never committed are claimed and routed by a live one."""
    r.xgroup_create("ingress", GROUP, "0", mkstream=True)
    ledger = Ledger()
    produce(r, ledger, "ingress", [({"type": "t", "n": str(i)}, BOTH) for i in range(30)])
    r.xreadgroup(GROUP, "dead", {"ingress": ">"}, count=30)
    assert consumers(r)["dead"] == 30
    async with running(table_from(TABLE), url, consumer="alive"):
        await wait_for(lambda: drained(r), 10, "reclaimed")
    assert r.xlen("out-a") == 30
    report = check(r, ledger, BOTH)
    assert report.clean, report.examples


async def test_idle_consumers_without_pending_are_forgotten(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """An idle consumer with nothing pending is deleted; one with pending entries never is."""
    r.xgroup_create("ingress", GROUP, "0", mkstream=True)
    r.xadd("ingress", {"type": "t"})
    r.xreadgroup(GROUP, "busy", {"ingress": ">"}, count=1)
    r.xgroup_createconsumer("ingress", GROUP, "gone")
    r.xgroup_createconsumer("ingress", GROUP, "leased")
    r.set(keys.consumer_lease(GROUP, "leased"), b"elsewhere 1 tok", px=60_000)
    table = table_from(TABLE.replace("claim_idle_ms: 300", "claim_idle_ms: 600000"))
    async with running(table, url, consumer="me", forget_idle_ms=200) as router:
        await wait_for(lambda: "gone" not in consumers(r), 10, "forgotten")
        await asyncio.sleep(0)
        assert router.ready
        left = consumers(r)
    assert left["busy"] == 1  # pending: kept
    assert "leased" in left  # a live lease: kept
    assert "me" in left


async def test_forget_is_refused_when_entries_are_pending(r: redis.Redis) -> None:
    """The delete script re-checks pending atomically: a consumer with pending stays."""
    r.xgroup_create("ingress", GROUP, "0", mkstream=True)
    r.xadd("ingress", {"type": "t"})
    r.xreadgroup(GROUP, "busy", {"ingress": ">"}, count=1)
    client = _async(r)
    try:
        assert not await membership.forget(client, "ingress", GROUP, "busy", 0)
        assert not await membership.forget(client, "ingress", GROUP, "nobody", 0)
    finally:
        await client.aclose()
    assert consumers(r) == {"busy": 1}


def _async(r: redis.Redis) -> redis.asyncio.Redis:
    kw = r.connection_pool.connection_kwargs
    return redis.asyncio.Redis(host=kw["host"], port=kw["port"], db=kw.get("db", 0))
