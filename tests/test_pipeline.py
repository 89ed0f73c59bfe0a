"""Read-ahead pipelining on a backlog: order, atomicity and counts as without it."""

from __future__ import annotations

import json
from collections.abc import Callable

import redis

from synapse.config import RoutingTable
from tests.conftest import running, wait_for
from tests.support.metrics import counted

TABLE = """
    version: 1
    router: {batch: 20, block_ms: 100, claim_idle_ms: 60000}
    sources: [ingress]
    routes:
      - name: all
        match: "*"
        to: [copy-a, copy-b]
"""


def backlog(r: redis.Redis, count: int) -> list[bytes]:
    pipe = r.pipeline(transaction=False)
    for i in range(count):
        pipe.xadd("ingress", {"type": "t.x", "data": json.dumps({"n": i})})
    return list(pipe.execute())


def routed_ids(r: redis.Redis, stream: str) -> list[bytes]:
    return [f[b"synapse-id"] for _, f in r.xrange(stream)]


async def test_backlog_is_committed_in_read_order_with_exact_counts(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """A backlog of many full batches lands once, in source order, with every count right."""
    ids = backlog(r, 1010)  # 50 full batches of 20 and a short one
    async with running(table_from(TABLE), url) as router:
        await wait_for(lambda: r.xlen("copy-b") == len(ids), what="backlog drained")
        await wait_for(lambda: not r.xpending("ingress", "synapse-router")["pending"])
        metrics = router.metrics

        # Redis shows the last commit before this loop has handled its reply: wait for that.
        def consumed() -> float:
            return counted(metrics, "synapse_events_consumed", source="ingress")

        await wait_for(lambda: consumed() >= len(ids), what="last reply handled")
        assert consumed() == len(ids)
        routed = counted(metrics, "synapse_events_routed", route="all", destination="copy-a")
        assert routed == len(ids)
        assert router.batches == 51
        [latency] = metrics.latency.collect()
        count = next(s.value for s in latency.samples if s.name.endswith("_count"))
        assert count == len(ids)  # one latency observation per event, grouped per batch
    assert routed_ids(r, "copy-a") == ids
    assert routed_ids(r, "copy-b") == ids


async def test_stop_during_a_backlog_leaves_whole_entries_only(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """Stopped mid-backlog: each entry is acked with both copies, or pending with none."""
    ids = backlog(r, 4000)
    async with running(table_from(TABLE), url) as router:
        await wait_for(lambda: r.xlen("copy-a") >= 200 if r.exists("copy-a") else False)
        router.stop()
    pending = r.xpending("ingress", "synapse-router")["pending"]
    group = r.xinfo_groups("ingress")[0]
    delivered = ids.index(group["last-delivered-id"]) + 1
    acked = delivered - pending
    assert 0 < acked < len(ids)
    assert routed_ids(r, "copy-a") == ids[:acked]  # a prefix, in order: no gap, no partial batch
    assert routed_ids(r, "copy-b") == ids[:acked]
    # what was read ahead but not committed stays pending for this consumer, nothing else
    still = [p["message_id"] for p in r.xpending_range("ingress", "synapse-router", "-", "+", 100)]
    assert still == ids[acked:delivered]


async def test_connections_killed_mid_backlog_lose_and_duplicate_nothing(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """Router connections killed while batches are read ahead: every entry lands once, in order."""
    ids = backlog(r, 6000)
    async with running(table_from(TABLE), url):
        await wait_for(lambda: r.xlen("copy-a") >= 500 if r.exists("copy-a") else False)
        killed = r.client_kill_filter(_type="normal", skipme=True)
        at_kill = r.xlen("copy-a")
        assert killed >= 2  # the router's reader and writer
        await wait_for(lambda: r.xlen("copy-b") >= len(ids), timeout_s=30, what="recovered")
        await wait_for(lambda: not r.xpending("ingress", "synapse-router")["pending"])
        assert at_kill < len(ids)  # killed mid-backlog (a command in flight errors, or not)
    assert routed_ids(r, "copy-a") == ids  # once each, in source order
    assert routed_ids(r, "copy-b") == ids


async def test_commit_refused_mid_backlog_resumes_without_loss_or_duplicates(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """Commits refused (OOM) while reading ahead: after recovery, every entry once, in order."""
    ids = backlog(r, 6000)
    try:
        async with running(table_from(TABLE), url) as router:
            await wait_for(lambda: r.xlen("copy-a") >= 500 if r.exists("copy-a") else False)
            r.config_set("maxmemory", 1)  # every write refused from now on
            await wait_for(
                lambda: counted(router.metrics, "synapse_redis_errors", kind="outage") >= 1,
                what="a refused commit",
            )
            assert r.xlen("copy-a") < len(ids)
            r.config_set("maxmemory", 0)
            await wait_for(lambda: r.xlen("copy-b") >= len(ids), timeout_s=30, what="recovered")
            await wait_for(lambda: not r.xpending("ingress", "synapse-router")["pending"])
    finally:
        r.config_set("maxmemory", 0)
    assert routed_ids(r, "copy-a") == ids
    assert routed_ids(r, "copy-b") == ids


async def test_a_swap_mid_backlog_stops_the_read_ahead(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """A reload during a backlog applies within a few batches (no more reads are sent
    ahead once a swap waits), and every entry is routed once, by one table or the other."""
    ids = backlog(r, 30_000)
    old = table_from(TABLE)
    new = table_from(TABLE.replace("to: [copy-a, copy-b]", "to: [copy-new]"))
    async with running(old, url) as router:
        await wait_for(lambda: r.exists("copy-a") and r.xlen("copy-a") >= 200, what="routing")
        router.swap_table(new)
        at_swap = r.xlen("copy-a")
        await wait_for(lambda: router.table is new, what="swapped")
        await wait_for(lambda: not r.xpending("ingress", "synapse-router")["pending"])
        await wait_for(lambda: r.xlen("copy-a") + r.xlen("copy-new") >= len(ids), 30, "drained")
    # In flight at the swap: the batch being planned, one commit, one read sent ahead.
    assert r.xlen("copy-a") - at_swap <= 4 * old.settings.batch
    assert routed_ids(r, "copy-a") + routed_ids(r, "copy-new") == ids
