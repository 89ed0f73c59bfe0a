"""Retention by age: max_age rules, the XTRIM MINID chore, and a source never trimmed unrouted."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis
import redis.asyncio as aioredis

from synapse import retention
from synapse.config import RoutingTable
from synapse.errors import ConfigError
from tests.conftest import running, wait_for

DAY_MS = 86_400_000
TABLE = """
    version: 1
    router: {block_ms: 50}
    sources: [ingress]
    routes:
      - {name: all, match: "ev.*", to: [audit-events]}
    retention:
      ingress: {max_age: 7d}
      "*-events": {maxlen: 1000, max_age: 2d}
      "synapse:dlq": {max_age: 30d}
"""


@pytest.fixture
async def client(url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(url)
    yield c
    await c.aclose()


def old(r: redis.Redis, stream: str, days: float, n: int = 1) -> list[bytes]:
    """``n`` entries ``days`` old on ``stream``, with explicit ids."""
    base = int(time.time() * 1000 - days * DAY_MS)
    return [r.xadd(stream, {"type": "ev.a", "data": "{}"}, id=f"{base}-{i}") for i in range(n)]


def test_max_age_rules_compile_next_to_maxlen(table_from: Callable[..., RoutingTable]) -> None:
    """max_age alone or with maxlen; the first matching glob decides; maxlen is unchanged."""
    table = table_from(TABLE)
    assert table.max_age_for("ingress") == 7 * DAY_MS
    assert table.max_age_for("audit-events") == 2 * DAY_MS
    assert table.max_age_for("synapse:dlq") == 30 * DAY_MS
    assert table.max_age_for("other") is None
    assert table.maxlen_for("audit-events") == 1000 and table.maxlen_for("ingress") is None
    assert [retention.parse_age_ms(t) for t in ("250ms", "90s", "5m", "2h", "1w")] == [
        250, 90_000, 300_000, 7_200_000, 604_800_000,
    ]  # fmt: skip


@pytest.mark.parametrize("bad", ["7 days", "0d", "7", "-1h", "7D"])
def test_bad_max_age_is_a_config_problem_with_its_line(
    table_from: Callable[..., RoutingTable], bad: str
) -> None:
    """A max_age that is not <number><unit> is refused at load, naming the line."""
    text = TABLE.replace("ingress: {max_age: 7d}", f'ingress: {{max_age: "{bad}"}}')
    with pytest.raises(ConfigError) as caught:
        table_from(text)
    [problem] = caught.value.problems
    assert problem.line == 8 and "max_age" in problem.message


async def test_chore_trims_old_entries_of_destinations_and_dead_letters(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """Entries older than max_age go (XTRIM MINID), newer ones stay, on every matching stream."""
    old(r, "audit-events", 3, 150)
    kept = old(r, "audit-events", 1, 5)
    old(r, "synapse:dlq", 40, 150)
    dlq_kept = old(r, "synapse:dlq", 10, 2)
    async with running(table_from(TABLE), url, retention_interval_s=0.1):
        await wait_for(lambda: r.xlen("audit-events") == 5, what="old copies trimmed")
        await wait_for(lambda: r.xlen("synapse:dlq") == 2, what="old dead letters trimmed")
    assert [e[0] for e in r.xrange("audit-events")] == kept
    assert [e[0] for e in r.xrange("synapse:dlq")] == dlq_kept


async def test_a_source_is_never_trimmed_past_what_its_group_owes(
    table_from: Callable[..., RoutingTable], r: redis.Redis, client: aioredis.Redis
) -> None:
    """Old entries of a source that are pending or undelivered stay; routed ones go."""
    table = table_from(TABLE)
    ids = old(r, "ingress", 10, 300)
    r.xgroup_create("ingress", "synapse-router", id="0")
    r.xreadgroup("synapse-router", "c1", {"ingress": ">"}, count=250)
    r.xack("ingress", "synapse-router", *ids[:200])  # 200 routed; 50 pending; 50 undelivered
    now_ms = int(time.time() * 1000)
    removed = await retention.trim_by_age(client, table, ["ingress"], ["ingress"], now_ms)
    assert [e[0] for e in r.xrange("ingress")] == ids[200:]  # routed ones went, owed ones stay
    assert removed == {"ingress": 200}
    r.xack("ingress", "synapse-router", *ids[200:250])
    await retention.trim_by_age(client, table, ["ingress"], ["ingress"], now_ms)
    assert [e[0] for e in r.xrange("ingress")] == ids[250:]  # undelivered ones stay
