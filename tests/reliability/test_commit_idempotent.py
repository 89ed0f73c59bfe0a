"""A commit applies each entry at most once: a stale or repeated commit writes nothing twice."""

from __future__ import annotations

from collections.abc import Callable

import redis
import redis.asyncio as aioredis

from synapse import wire
from synapse.commit import commit
from synapse.config import RoutingTable
from synapse.plan import Planner
from synapse.wire import connect_any as connect

TABLE = """
    version: 1
    sources: [ingress]
    routes:
      - {name: all, match: "*", to: [out-a, out-b]}
"""


async def read_as(client: aioredis.Redis, consumer: str) -> list[tuple[bytes, list[bytes]]]:
    reply = await wire.execute(
        client, "XREADGROUP", "GROUP", "g", consumer, "STREAMS", "ingress", ">"
    )
    entries: list[tuple[bytes, list[bytes]]] = reply[0][1]
    return entries


async def test_commit_of_a_plan_already_committed_writes_nothing(
    table_from: Callable[..., RoutingTable], r: redis.Redis, url: str
) -> None:
    """Re-running a commit whose reply was lost (timeout) neither re-writes nor fails."""
    planner = Planner(table_from(TABLE))
    aclient = connect(url, read_timeout_s=5)  # RESP2 and raw replies, as the router reads them
    r.xgroup_create("ingress", "g", "0", mkstream=True)
    for i in range(3):
        r.xadd("ingress", {"type": "t", "n": str(i)})
    plan = planner.plan_batch("ingress", await read_as(aclient, "a"), 0)
    first = await commit(aclient, plan, "g")
    again = await commit(aclient, plan, "g")
    await aclient.aclose()
    assert first.failed == again.failed == {}
    assert again.skipped == frozenset(e.entry_id for e in plan.entries)
    assert r.xlen("out-a") == r.xlen("out-b") == 3
    assert r.xpending("ingress", "g")["pending"] == 0


async def test_stale_router_commit_after_reclaim_writes_nothing(
    table_from: Callable[..., RoutingTable], r: redis.Redis, url: str
) -> None:
    """A router stalled past claim_idle_ms commits entries another one reclaimed: one copy."""
    planner = Planner(table_from(TABLE))
    aclient = connect(url, read_timeout_s=5)  # RESP2 and raw replies, as the router reads them
    r.xgroup_create("ingress", "g", "0", mkstream=True)
    for i in range(4):
        r.xadd("ingress", {"type": "t", "n": str(i)})
    stale = planner.plan_batch("ingress", await read_as(aclient, "a"), 0)
    # Router "b" reclaims the stalled router's entries and commits them first.
    _, claimed, _ = await wire.execute(aclient, "XAUTOCLAIM", "ingress", "g", "b", 0, "0-0")
    await commit(
        aclient, planner.plan_batch("ingress", claimed, 0, {e[0]: 2 for e in claimed}), "g"
    )
    r.xadd("ingress", {"type": "t", "n": "late"})  # one entry "a" never saw, still unread
    result = await commit(aclient, stale, "g")  # "a" wakes up and commits its old plan
    await aclient.aclose()
    assert result.failed == {}
    assert r.xlen("out-a") == r.xlen("out-b") == 4
    assert sorted(f[b"n"] for _, f in r.xrange("out-a")) == [b"0", b"1", b"2", b"3"]
