"""Refused entries are retried alone, with a short backoff; outages never use up attempts."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import redis

from synapse.config import RoutingTable
from tests.conftest import running, wait_for
from tests.support.metrics import counted

MAX_ID = "18446744073709551615-18446744073709551615"
TABLE = """
    version: 1
    router: {batch: 50, block_ms: 2000, claim_idle_ms: 60000, max_deliveries: 3}
    sources: [ingress]
    routes:
      - {name: plain, match: "ok.*", to: [good]}
      - {name: fan, match: "bad.*", to: [good, refusing]}
"""


def pending_counts(r: redis.Redis) -> dict[bytes, int]:
    rows = r.xpending_range("ingress", "synapse-router", "-", "+", 1000)
    return {row["message_id"]: row["times_delivered"] for row in rows}


async def test_one_refusing_destination_retries_only_its_entry_then_dead_letters_it(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """Ten entries commit at once; the refused one is retried within seconds (not
    claim_idle_ms), then its writable copy is written and one dead letter records the
    refused destination."""
    r.xadd("refusing", {"x": "1"}, id=MAX_ID)  # its IDs are exhausted: every XADD fails
    pipe = r.pipeline(transaction=False)
    for i in range(5):
        pipe.xadd("ingress", {"type": "ok.x", "data": json.dumps({"n": i})})
    pipe.xadd("ingress", {"type": "bad.x", "data": json.dumps({"n": "bad"})})
    for i in range(5, 10):
        pipe.xadd("ingress", {"type": "ok.x", "data": json.dumps({"n": i})})
    ids = pipe.execute()
    bad = ids[5]
    started = time.monotonic()
    async with running(table_from(TABLE), url) as router:
        await wait_for(lambda: r.exists("synapse:dlq"), 15, "the refused entry given up")
        took_s = time.monotonic() - started
        await wait_for(lambda: not pending_counts(r), what="nothing pending")
        metrics = router.metrics
        dead = "synapse_events_dead_lettered"
        await wait_for(
            lambda: counted(metrics, dead, reason="destination_error") == 1, what="counted"
        )
        assert counted(metrics, "synapse_events_retried", source="ingress") == 2
        routed = "synapse_events_routed"
        assert counted(metrics, routed, route="plain", destination="good") == 10
        assert counted(metrics, routed, route="fan", destination="good") == 1
    assert took_s < 10  # three attempts with a 0.1 s doubling backoff, not 60 s apart
    good = [f[b"synapse-id"] for _, f in r.xrange("good")]
    assert sorted(good) == sorted(ids) and len(good) == 11  # the writable copy, once
    [(_, letter)] = r.xrange("synapse:dlq")
    assert letter[b"synapse-id"] == bad
    assert letter[b"synapse-reason"] == b"destination_error"
    assert letter[b"synapse-destination"] == b"refusing"
    assert letter[b"synapse-route"] == b"fan"
    assert letter[b"synapse-deliveries"] == b"3"
    assert b"exhausted" in letter[b"synapse-error"]
    assert r.xlen("refusing") == 1


async def test_refused_entry_lands_once_when_its_destination_recovers(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """A destination that refuses, then accepts: the retry writes each copy exactly once,
    counting only that entry's attempts."""
    r.set("refusing", "not a stream")
    bad = r.xadd("ingress", {"type": "bad.x", "data": "{}"})
    async with running(table_from(TABLE), url) as router:
        await wait_for(
            lambda: counted(router.metrics, "synapse_events_retried", source="ingress") >= 1,
            what="a first refusal",
        )
        r.delete("refusing")
        ok = [r.xadd("ingress", {"type": "ok.x", "data": "{}"}) for _ in range(3)]
        await wait_for(lambda: r.exists("refusing"), 10, "the retry")
        await wait_for(lambda: not pending_counts(r), what="nothing pending")
    assert [f[b"synapse-id"] for _, f in r.xrange("refusing")] == [bad]
    assert sorted(f[b"synapse-id"] for _, f in r.xrange("good")) == sorted([bad, *ok])
    assert not r.exists("synapse:dlq")


async def test_outage_never_uses_up_attempts(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """Seconds of OOM with max_deliveries 2: not ready meanwhile, nothing dead-lettered,
    every entry routed once after, none delivered more than once."""
    table = table_from(TABLE.replace("max_deliveries: 3", "max_deliveries: 2"))
    n = 3000
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd("ingress", {"type": "ok.x", "data": json.dumps({"n": i})})
    pipe.execute()
    try:
        r.config_set("maxmemory-policy", "noeviction")
        async with running(table, url) as router:
            await wait_for(lambda: r.exists("good") and r.xlen("good") >= 100, what="routing")
            # At the limit: small writes may pass, a batch's commit is refused.
            r.config_set("maxmemory", int(r.info("memory")["used_memory"]))
            metrics, errors = router.metrics, "synapse_redis_errors"
            await wait_for(lambda: not router.ready, what="not ready")
            await wait_for(
                lambda: sum(counted(metrics, errors, kind=k) for k in ("outage", "response")) >= 6,
                20,
                "several refused commits",
            )
            counts = pending_counts(r)
            assert counts and max(counts.values()) == 1  # re-reads after the outage: uncounted
            r.config_set("maxmemory", 0)
            await wait_for(lambda: r.xlen("good") == n, 30, "recovered")
            await wait_for(lambda: not pending_counts(r), what="nothing pending")
            await wait_for(lambda: router.ready, what="ready again")
    finally:
        r.config_set("maxmemory", 0)
    assert not r.exists("synapse:dlq")
    assert len({f[b"synapse-id"] for _, f in r.xrange("good")}) == n
    assert counted(metrics, errors, kind="outage") >= 1
