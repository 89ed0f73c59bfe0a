"""The router on a real 3-primary cluster: slots, atomic hash-tag routes, write-then-ack."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from synapse import clustercommit, slots, wire
from synapse.config import RoutingTable
from synapse.plan import BatchPlan, EntryPlan, Write
from tests.cluster.conftest import slot
from tests.conftest import running, wait_for
from tests.reliability.ledger import Ledger, check, expect_of, produce, quiescent

SPREAD = """
    version: 1
    router: {block_ms: 100, claim_idle_ms: 500, rescan_interval_ms: 200, batch: 50}
    sources: [ingress, other, "in:*"]
    routes:
      - name: models
        match: "model.*"
        to: [model-events, all-events]
      - name: jobs
        match: "job.*"
        to: [job-events, all-events]
"""
GROUP = "synapse-router"

TAGGED = """
    version: 1
    router:
      block_ms: 100
      claim_idle_ms: 500
      dead_letter: "{orders}:dlq"
      batch: 50
    sources: ["{orders}:in"]
    routes:
      - name: orders
        match: "order.*"
        to: ["{orders}:billing", "{orders}:shipping"]
"""


def test_cluster_url_parsing() -> None:
    """redis+cluster:// selects the cluster client and maps to the seed node's redis:// URL."""
    assert wire.is_cluster_url("redis+cluster://10.0.0.1:7000")
    assert wire.is_cluster_url("rediss+cluster://u:p@h:1")
    assert not wire.is_cluster_url("redis://h:1/0")
    assert wire.node_url("rediss+cluster://u:p@h:1/0") == "rediss://u:p@h:1"
    client = wire.connect_any("redis+cluster://127.0.0.1:1", read_timeout_s=1)
    assert isinstance(client, wire.ClusterClient)
    plain = wire.connect_any("redis://127.0.0.1:1/0", read_timeout_s=1)
    assert not isinstance(plain, wire.ClusterClient)


def test_atomicity_is_decided_by_slots() -> None:
    """An entry is atomic only when every write shares the source's hash slot."""
    same = EntryPlan(b"1-0", "routed", (Write("{o}:a", [], None), Write("{o}:b", [], None)))
    apart = EntryPlan(b"1-0", "routed", (Write("{o}:a", [], None), Write("b", [], None)))
    assert slot("{o}:in") == slot("{o}:a") != slot("b")
    assert clustercommit.is_atomic("{o}:in", same)
    assert not clustercommit.is_atomic("{o}:in", apart)
    assert clustercommit.is_atomic("x", EntryPlan(b"1-0", "dropped", ()))
    groups = slots.group_by_slot(["{o}:in", "b", "{o}:x"])
    assert groups == [("{o}:in", "{o}:x"), ("b",)]


async def test_routes_across_slots(
    table_from: Callable[..., RoutingTable], curl: str, rc: RedisCluster
) -> None:
    """Sources and destinations on different nodes: every event lands once in each destination."""
    table = table_from(SPREAD)
    assert len({slot(k) for k in ("ingress", "other", "model-events", "job-events")}) == 4
    ledger = Ledger()
    sources = ["ingress", "other", "in:x"]
    async with running(table, curl) as router:
        assert router.cluster
        for i in range(150):
            for source in sources:
                fields = {"type": "model.ready" if i % 2 else "job.done", "n": str(i)}
                produce(rc, ledger, source, [(fields, expect_of(table, source, fields))])
        await wait_for(lambda: quiescent(rc, sources, GROUP), 20, "drained")
    report = check(rc, ledger, ["model-events", "job-events", "all-events"])
    assert report.clean, report.examples
    assert report.events == 450
    assert rc.xlen("all-events") == 450


async def test_hash_tagged_route_is_atomic(
    table_from: Callable[..., RoutingTable], curl: str, rc: RedisCluster
) -> None:
    """A hash-tagged route commits by Lua: a WRONGTYPE destination blocks the whole fan-out."""
    table = table_from(TAGGED)
    rc.set("{orders}:shipping", "not a stream")
    async with running(table, curl):
        rc.xadd("{orders}:in", {"type": "order.placed"})
        await wait_for(lambda: _delivered(rc, "{orders}:in") >= 1, what="read")
        await wait_for(lambda: rc.xpending("{orders}:in", GROUP)["pending"] == 1)
        assert not rc.exists("{orders}:billing")  # nothing written: the commit is all or nothing
        rc.delete("{orders}:shipping")
        await wait_for(lambda: rc.exists("{orders}:shipping"), 10, "retried after claim_idle_ms")
        await wait_for(lambda: quiescent(rc, ["{orders}:in"], GROUP))
    assert rc.xlen("{orders}:billing") == 1
    assert rc.xlen("{orders}:shipping") == 1


async def test_spread_route_writes_then_acks(
    table_from: Callable[..., RoutingTable], curl: str, rc: RedisCluster
) -> None:
    """Across slots the copies that can land are written; the entry is acked only when all did."""
    table = table_from(SPREAD)
    rc.set("job-events", "not a stream")
    async with running(table, curl):
        rc.xadd("ingress", {"type": "job.done"})
        await wait_for(lambda: rc.exists("all-events"), what="the writable copy")
        assert rc.xpending("ingress", GROUP)["pending"] == 1  # not acked
        await wait_for(lambda: rc.xlen("all-events") == 0, what="the landed copy rolled back")
        assert rc.xpending("ingress", GROUP)["pending"] == 1  # not acked
        rc.delete("job-events")
        await wait_for(lambda: quiescent(rc, ["ingress"], GROUP), 10, "acked after the retry")
    assert rc.xlen("job-events") == 1
    assert rc.xlen("all-events") == 1  # the refused try's copy was deleted again: no duplicate


async def test_rerun_cluster_commit_reports_every_entry_skipped(
    curl: str, rc: RedisCluster
) -> None:
    """A cluster commit run twice: the second writes nothing and reports atomic and spread
    entries alike as skipped, so they are not counted as routed twice."""
    for source in ("{orders}:in",):
        rc.xgroup_create(source, GROUP, "0", mkstream=True)
    ids = [rc.xadd("{orders}:in", {"n": str(i)}) for i in range(4)]
    rc.xreadgroup(GROUP, "c", {"{orders}:in": ">"})

    def copy(entry_id: bytes, *dests: str) -> EntryPlan:
        writes = tuple(
            Write(d, [b"n", b"x"], None, (b"{orders}:in", entry_id, b"r")) for d in dests
        )
        return EntryPlan(entry_id, "routed", writes, tuple((d, "r") for d in dests))

    plan = BatchPlan(
        "{orders}:in",
        (
            copy(ids[0], "{orders}:billing"),
            copy(ids[1], "{orders}:billing"),
            copy(ids[2], "elsewhere", "{orders}:billing"),
            copy(ids[3], "elsewhere"),
        ),
    )
    client = wire.connect_any(curl, read_timeout_s=5)
    try:
        first = await clustercommit.commit_cluster(client, plan, GROUP)
        again = await clustercommit.commit_cluster(client, plan, GROUP)
    finally:
        await client.aclose()
    assert first.failed == {} and first.skipped == frozenset()
    assert again.failed == {} and again.skipped == frozenset(ids)
    assert rc.xlen("{orders}:billing") == 3
    assert rc.xlen("elsewhere") == 2  # the re-run's spread copies were deleted again


async def test_hash_tagged_events_neither_lost_nor_duplicated(
    table_from: Callable[..., RoutingTable], curl: str, rc: RedisCluster
) -> None:
    """Many batches through a hash-tagged route: the ledger shows no loss and no duplicate."""
    table = table_from(TAGGED)
    ledger = Ledger()
    async with running(table, curl):
        fanout = {"{orders}:billing", "{orders}:shipping"}
        events = [({"type": "order.placed", "n": str(i)}, fanout) for i in range(500)]
        produce(rc, ledger, "{orders}:in", events)
        rc.xadd("{orders}:in", {"type": "nobody.cares"})
        await wait_for(lambda: quiescent(rc, ["{orders}:in"], GROUP), 20, "drained")
    report = check(rc, ledger, fanout, dead_letter="{orders}:dlq")
    assert report.clean and report.events == 500, report.examples
    [(_, dead)] = rc.xrange("{orders}:dlq")
    assert dead[b"synapse-reason"] == b"no_route"


def _delivered(rc: RedisCluster, source: str) -> int:
    groups = rc.xinfo_groups(source)
    return int(groups[0]["entries-read"] or 0) if groups else 0


async def test_stream_reads_are_routed_by_their_own_slot() -> None:
    """XREADGROUP keys are found without a server round trip; streams across slots refuse."""
    client = wire.connect_any("redis+cluster://127.0.0.1:1", read_timeout_s=1)
    assert isinstance(client, wire.ClusterClient)
    args = ("GROUP", "g", "c", "COUNT", 1, "STREAMS", "{o}:a", "{o}:b", ">", ">")
    assert await client._determine_slot("XREADGROUP", *args) == slot("{o}:a")
    with pytest.raises(RedisClusterException, match="same key slot"):
        await client._determine_slot("XREADGROUP", "GROUP", "g", "c", "STREAMS", "a", "b", 0, 0)
