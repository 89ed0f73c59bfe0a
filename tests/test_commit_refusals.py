"""No write error inside the commit script leaves an acknowledged entry with a missing copy."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import redis

from synapse import wire
from synapse.commit import commit
from synapse.config import RoutingTable
from synapse.plan import ROUTED, BatchPlan, EntryPlan, Planner, Write
from synapse.wire import connect_any as connect

MAX_ID = "18446744073709551615-18446744073709551615"


def routed(entry_id: bytes, n: bytes, *dests: str, maxlen: int | None = None) -> EntryPlan:
    writes = tuple(Write(d, [b"n", n], maxlen, (b"in", entry_id, b"r")) for d in dests)
    return EntryPlan(entry_id, ROUTED, writes, tuple((d, "r") for d in dests))


def pending_ids(r: redis.Redis) -> list[bytes]:
    return [p["message_id"] for p in r.xpending_range("in", "g", "-", "+", 100)]


@pytest.fixture
def ids(r: redis.Redis) -> list[bytes]:
    """Three entries of ``in`` delivered to consumer ``c`` of group ``g``."""
    out = [r.xadd("in", {"n": str(i)}) for i in range(3)]
    r.xgroup_create("in", "g", "0")
    r.xreadgroup("g", "c", {"in": ">"})
    return out


@pytest.fixture
async def aclient(url: str) -> AsyncIterator[wire.Client]:
    client = connect(url, read_timeout_s=5)
    yield client
    await client.aclose()


async def test_exhausted_ids_destination_leaves_no_copy_and_no_ack(
    r: redis.Redis, ids: list[bytes], aclient: wire.Client
) -> None:
    """A destination whose IDs are exhausted: the entry's other copy is rolled back, not acked."""
    r.xadd("full", {"x": "1"}, id=MAX_ID)
    plan = BatchPlan(
        "in", (routed(ids[0], b"0", "ok", "full"), routed(ids[1], b"1", "ok", "ok-too"))
    )
    result = await commit(aclient, plan, "g")
    assert list(result.failed) == [ids[0]]
    assert "exhausted" in result.refused[ids[0]]["full"]
    assert list(result.refused[ids[0]]) == ["full"]
    assert [f[b"n"] for _, f in r.xrange("ok")] == [b"1"]  # no partial fan-out of ids[0]
    assert r.xlen("full") == 1
    assert ids[0] in pending_ids(r) and ids[1] not in pending_ids(r)
    # Once the destination is fixed, the retry writes each copy exactly once.
    r.delete("full")
    again = await commit(aclient, BatchPlan("in", (plan.entries[0],)), "g")
    assert again.failed == {} and again.skipped == frozenset()
    assert sorted(f[b"n"] for _, f in r.xrange("ok")) == [b"0", b"1"]
    assert [f[b"n"] for _, f in r.xrange("full")] == [b"0"]
    assert pending_ids(r) == [ids[2]]


async def test_acl_refused_destination_is_reported_per_destination(
    url: str, r: redis.Redis, ids: list[bytes]
) -> None:
    """A user that may not write one destination: that entry keeps no copy anywhere, no ack."""
    r.execute_command("ACL", "SETUSER", "narrow", "on", ">pw", "~in", "~ok", "%R~ro", "+@all")
    narrow = connect(url.replace("redis://", "redis://narrow:pw@"), read_timeout_s=5)
    try:
        plan = BatchPlan("in", (routed(ids[0], b"0", "ok", "ro"), routed(ids[1], b"1", "ok")))
        result = await commit(narrow, plan, "g")
    finally:
        await narrow.aclose()
        r.execute_command("ACL", "DELUSER", "narrow")
    assert list(result.failed) == [ids[0]]
    assert set(result.refused[ids[0]]) == {"ro"}
    assert "NOPERM" in result.refused[ids[0]]["ro"]
    assert [f[b"n"] for _, f in r.xrange("ok")] == [b"1"]
    assert ids[0] in pending_ids(r)


async def test_every_refusing_destination_of_an_entry_is_named(
    r: redis.Redis, ids: list[bytes], aclient: wire.Client
) -> None:
    """Two bad destinations of one entry are both reported, the good one rolled back."""
    r.set("str", "x")
    r.xadd("full", {"x": "1"}, id=MAX_ID)
    plan = BatchPlan("in", (routed(ids[0], b"0", "ok", "str", "full"),))
    result = await commit(aclient, plan, "g")
    assert set(result.refused[ids[0]]) == {"str", "full"}
    assert "not a stream" in result.failed[ids[0]]
    assert not r.exists("ok")  # written, then rolled back (and the new key removed)


async def test_retention_trims_after_the_batch_and_never_a_rolled_back_copy(
    r: redis.Redis, ids: list[bytes], aclient: wire.Client
) -> None:
    """MAXLEN ~ is applied once per destination after the writes; a rerun trims nothing more."""
    for i in range(300):
        r.xadd("capped", {"old": str(i)})
    plan = BatchPlan("in", tuple(routed(e, b"x", "capped", maxlen=10) for e in ids))
    first = await commit(aclient, plan, "g")
    assert first.failed == {}
    assert 10 <= r.xlen("capped") < 303
    length = r.xlen("capped")
    again = await commit(aclient, plan, "g")  # a lost reply, re-run: nothing written
    assert again.skipped == frozenset(ids)
    assert r.xlen("capped") == length
    assert [f.get(b"n") for _, f in r.xrange("capped")][-3:] == [b"x"] * 3


async def test_widest_events_allowed_still_commit_or_dead_letter(
    table_from: Callable[..., RoutingTable], r: redis.Redis, aclient: wire.Client
) -> None:
    """max_fields at its maximum: an event too wide for the script's Lua stack is
    dead-lettered too_large (its dead letter fits), and its batch-mate commits."""
    table = table_from(
        """
        version: 1
        router: {max_fields: 4000, max_event_bytes: 104857600}
        sources: [in]
        routes: [{name: all, match: "*", to: [out-a, out-b]}]
        """
    )
    wide: dict[str, str | bytes] = {f"f{k}": "v" for k in range(3998)}
    wide["type"] = "t"
    blobs: dict[str, str | bytes] = {f"b{k}": b"x" * 5000 for k in range(3998)}
    blobs["type"] = "t"
    ids = [r.xadd("in", wide), r.xadd("in", blobs), r.xadd("in", {"type": "t"})]
    r.xgroup_create("in", "g", "0")
    entries = (await wire.execute(aclient, "XREADGROUP", "GROUP", "g", "c", "STREAMS", "in", ">"))[
        0
    ][1]
    plan = Planner(table).plan_batch("in", entries, 0)
    assert [e.reason for e in plan.entries[:2]] == ["too_large", "too_large"]
    result = await commit(aclient, plan, "g")
    assert result.failed == {}
    assert [f[b"synapse-id"] for _, f in r.xrange("synapse:dlq")] == ids[:2]
    assert [f[b"synapse-id"] for _, f in r.xrange("out-a")] == [ids[2]]
    assert pending_ids(r) == []
