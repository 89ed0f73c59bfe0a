"""The compact commit encoding writes exactly each Write's ``fields``, byte for byte."""

from __future__ import annotations

import redis

from synapse import keys
from synapse.commit import commit, encode
from synapse.plan import DEAD_LETTER, DROPPED, ROUTED, BatchPlan, EntryPlan, Write


def raw_entries(r: redis.Redis, stream: str) -> list[list[bytes]]:
    """XRANGE as the server sends it: flat field lists, duplicates kept."""
    conn = r.connection_pool.get_connection()
    try:
        conn.send_command("XRANGE", stream, "-", "+")
        reply = conn.read_response()
    finally:
        r.connection_pool.release(conn)
    return [fields for _id, fields in reply]


def routed(entry_id: bytes, base: list[bytes], *dests: tuple[str, str]) -> EntryPlan:
    writes = tuple(
        Write(dest, base, 1000 if dest.endswith("-capped") else None, (b"in", entry_id, r.encode()))
        for dest, r in dests
    )
    return EntryPlan(entry_id, ROUTED, writes, tuple(dests))


async def test_fan_out_dead_letter_and_plain_writes_land_as_planned(
    url: str, r: redis.Redis
) -> None:
    """Shared-base copies get their own provenance; DLQ and plain writes land verbatim."""
    from synapse.wire import connect_any as connect

    ids = [r.xadd("in", {"n": str(i)}) for i in range(5)]
    r.xgroup_create("in", "g", "0")
    r.xreadgroup("g", "c", {"in": ">"})
    dup = [b"k", b"v1", b"k", b"v2", b"bin", b"\xff\x00"]
    plain_fields = [b"x", b"1", keys.F_SOURCE, b"elsewhere"]
    entries = (
        routed(ids[0], dup, ("a", "r1"), ("b-capped", "r2"), ("c", "r1")),
        EntryPlan(ids[1], DEAD_LETTER, (Write("dlq", [b"why", b"bad"], None),), reason="x"),
        EntryPlan(ids[2], ROUTED, (Write("a", plain_fields, None),), (("a", "plain"),)),
        EntryPlan(ids[3], DROPPED, (), reason="no_route"),
        # provenance naming another source: sent as full fields, not rebuilt by the script
        EntryPlan(ids[4], ROUTED, (Write("c", [b"y", b"2"], None, (b"other", ids[4], b"r")),)),
    )
    plan = BatchPlan("in", entries)
    client = connect(url, read_timeout_s=5)
    try:
        result = await commit(client, plan, "g")
    finally:
        await client.aclose()
    assert result.failed == {}
    expected: dict[str, list[list[bytes]]] = {}
    for entry in entries:
        for write in entry.writes:
            expected.setdefault(write.stream, []).append(write.fields)
    for stream, copies in expected.items():
        assert raw_entries(r, stream) == copies
    assert raw_entries(r, "a")[0] == [
        *dup,
        keys.F_SOURCE,
        b"in",
        keys.F_ID,
        ids[0],
        keys.F_ROUTE,
        b"r1",
    ]
    assert r.xpending("in", "g")["pending"] == 0  # every entry acknowledged, dropped one too


def test_copies_of_an_entry_send_their_fields_once() -> None:
    """A fan-out of 3 carries the source fields once in ARGV, then -1 for each further copy."""
    base = [b"type", b"t", b"data", b"{}"]
    plan = BatchPlan("in", (routed(b"1-0", base, ("a", "r"), ("b", "r"), ("c", "s")),))
    _keys, argv = encode(plan, "g")
    assert argv.count(b"data") == 1
    assert argv.count(-1) == 2


async def test_wrong_type_destination_fails_only_its_entry(url: str, r: redis.Redis) -> None:
    """A copy bound for a non-stream key leaves its entry unwritten and pending; others commit."""
    from synapse.wire import connect_any as connect

    ids = [r.xadd("in", {"n": str(i)}) for i in range(2)]
    r.xgroup_create("in", "g", "0")
    r.xreadgroup("g", "c", {"in": ">"})
    r.set("bad", "x")
    plan = BatchPlan(
        "in",
        (
            routed(ids[0], [b"f", b"1"], ("ok", "r"), ("bad", "r")),
            routed(ids[1], [b"f", b"2"], ("ok", "r")),
        ),
    )
    client = connect(url, read_timeout_s=5)
    try:
        result = await commit(client, plan, "g")
    finally:
        await client.aclose()
    assert list(result.failed) == [ids[0]]
    assert [f[1] for f in raw_entries(r, "ok")] == [b"2"]  # no partial fan-out of the bad entry
    assert [p["message_id"] for p in r.xpending_range("in", "g", "-", "+", 10)] == [ids[0]]
