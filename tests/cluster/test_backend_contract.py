"""The Backend protocol's contract, run against every implementation (single Redis, Redis
Cluster): what a third backend (Kafka) must pass too. Only ``Backend`` methods are used,
plus a producer client to append entries and read the copies back.

It lives under tests/cluster/ for the cluster fixtures; the single-server case uses the
session server like every other test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from synapse import log as logging
from synapse.backend import Backend, Batch
from synapse.backends import open_backend
from synapse.config import RoutingTable
from synapse.errors import Failure
from synapse.metrics import Metrics
from synapse.plan import Planner
from tests.conftest import wait_for

TABLE = """
    version: 1
    router: {block_ms: 100, claim_idle_ms: 300, batch: 10, max_deliveries: 5}
    sources: ["{c}:in"]
    routes:
      - name: all
        match: "*"
        to: ["{c}:out"]
"""
SOURCE, OUT = "{c}:in", "{c}:out"


@dataclass
class Store:
    """A backend under test, the table it routes by, and a producer on the same store."""

    backend: Backend
    table: RoutingTable
    producer: Any
    stopping: asyncio.Event
    make: Callable[[str], Backend]

    def add(self, n: int) -> list[bytes]:
        return [self.producer.xadd(SOURCE, {"type": "t", "n": str(i)}) for i in range(n)]

    async def commit_all(self, batch: Batch) -> None:
        plan = Planner(self.table).plan_batch(batch.source, batch.entries, 0, batch.deliveries)
        result = await self.backend.commit(plan, self.table.settings.group)
        assert not result.failed and not result.skipped


@pytest.fixture(params=["redis", "cluster"])
async def store(
    request: pytest.FixtureRequest, table_from: Callable[..., RoutingTable]
) -> AsyncIterator[Store]:
    """Each backend on its own store, with the table's groups created (discover)."""
    if request.param == "redis":
        url = request.getfixturevalue("url")
        producer: Any = redis.Redis.from_url(url)
    else:
        url = request.getfixturevalue("curl")
        node = request.getfixturevalue("local_cluster").primary_nodes()[0]
        producer = RedisCluster(host="127.0.0.1", port=node.port)
    table = table_from(TABLE)
    stopping = asyncio.Event()
    made: list[Backend] = []

    def make(consumer: str) -> Backend:
        found = open_backend(
            url,
            consumer=consumer,
            password=None,
            block_ms=100,
            metrics=Metrics(),
            stopping=stopping,
            log=logging.get("test"),
        )
        made.append(found)
        return found

    backend = make("c1")
    await backend.start(table.settings)
    assert await backend.discover(table, create=True) == [SOURCE]
    try:
        yield Store(backend, table, producer, stopping, make)
    finally:
        for each in made:
            await each.close()
        producer.close()


async def _pages(pages: Any) -> list[Batch]:
    return [batch async for batch in pages]


async def test_read_hands_new_entries_once_as_first_deliveries(store: Store) -> None:
    """read: new entries per source, in order, deliveries None; a second read has none."""
    ids = store.add(3)
    read = await store.backend.read(store.table.settings, [SOURCE], 100)
    assert read is not None and [b.source for b in read] == [SOURCE]
    assert [e[0] for e in read[0].entries] == ids and read[0].deliveries is None
    assert await store.backend.read(store.table.settings, [SOURCE], 100) == []


async def test_read_returns_none_when_stopped_while_waiting(store: Store) -> None:
    """read: a stop while it waits for entries returns None at once."""
    settings = store.table.settings
    waiting = asyncio.ensure_future(store.backend.read(settings, [SOURCE], 5000))
    await asyncio.sleep(0)  # the read is sent and waits
    store.stopping.set()
    assert await asyncio.wait_for(waiting, 2) is None


async def test_commit_writes_the_copies_and_acknowledges(store: Store) -> None:
    """commit: every copy written with its provenance; nothing left pending."""
    ids = store.add(2)
    [batch] = await store.backend.read(store.table.settings, [SOURCE], 100) or []
    await store.commit_all(batch)
    copies = store.producer.xrange(OUT)
    assert [f[b"synapse-id"] for _, f in copies] == ids
    assert (
        await _pages(store.backend.own_pending(store.table.settings, [SOURCE], counted=True)) == []
    )


async def test_commit_reports_a_refused_destination_and_keeps_the_entry(store: Store) -> None:
    """commit: a destination that refuses (WRONGTYPE) fails its entry, which stays pending."""
    store.producer.set(OUT, "not a stream")
    [entry_id] = store.add(1)
    [batch] = await store.backend.read(store.table.settings, [SOURCE], 100) or []
    plan = Planner(store.table).plan_batch(SOURCE, batch.entries, 0)
    result = await store.backend.commit(plan, store.table.settings.group)
    assert list(result.failed) == [entry_id] and OUT in result.refused[entry_id]
    pending = await _pages(store.backend.own_pending(store.table.settings, [SOURCE], counted=False))
    assert [e[0] for b in pending for e in b.entries] == [entry_id]


async def test_own_pending_counts_a_delivery_only_when_asked(store: Store) -> None:
    """own_pending: entries read but not committed come back; counted re-reads add one."""
    ids = store.add(2)
    await store.backend.read(store.table.settings, [SOURCE], 100)
    settings = store.table.settings
    [quiet] = await _pages(store.backend.own_pending(settings, [SOURCE], counted=False))
    assert [e[0] for e in quiet.entries] == ids and dict(quiet.deliveries or {}) == dict.fromkeys(
        ids, 1
    )
    [counted] = await _pages(store.backend.own_pending(settings, [SOURCE], counted=True))
    assert dict(counted.deliveries or {}) == dict.fromkeys(ids, 2)
    await store.commit_all(counted)
    assert await _pages(store.backend.own_pending(settings, [SOURCE], counted=True)) == []


async def test_retry_later_hands_the_entry_back_when_due_counted(store: Store) -> None:
    """retry_later / next_retry_s / retries_due: the entry is re-delivered after its delay."""
    [entry_id] = store.add(1)
    await store.backend.read(store.table.settings, [SOURCE], 100)
    assert store.backend.next_retry_s() is None
    store.backend.retry_later(SOURCE, entry_id, 0.2)
    assert 0 < (store.backend.next_retry_s() or 0) <= 0.2
    await wait_for(lambda: store.backend.next_retry_s() == 0, 5, "due")
    [batch] = await _pages(store.backend.retries_due(store.table.settings))
    assert [e[0] for e in batch.entries] == [entry_id]
    assert dict(batch.deliveries or {}) == {entry_id: 2}
    assert store.backend.next_retry_s() is None


async def test_reclaim_takes_idle_entries_of_another_consumer(store: Store) -> None:
    """reclaim: entries another consumer holds longer than claim_idle_ms become ours, counted."""
    other = store.make("c2")
    ids = store.add(2)
    await other.read(store.table.settings, [SOURCE], 100)
    assert await _pages(store.backend.reclaim(store.table.settings, [SOURCE])) == []  # not idle
    found: list[Batch] = []

    async def reclaimed() -> bool:  # once idle for claim_idle_ms (300 ms)
        found[:] = await _pages(store.backend.reclaim(store.table.settings, [SOURCE]))
        return bool(found)

    await wait_for(reclaimed, 5, "entries idle long enough to reclaim")
    [batch] = found
    assert [e[0] for e in batch.entries] == ids
    assert dict(batch.deliveries or {}) == dict.fromkeys(ids, 2)


async def test_classify_names_a_lost_connection(store: Store) -> None:
    """classify: what the store raises when it cannot be reached is a CONNECTION failure."""
    unreachable = open_backend(
        "redis://127.0.0.1:1/0" if store.backend.name == "redis" else "redis+cluster://127.0.0.1:1",
        consumer="x",
        password=None,
        block_ms=100,
        metrics=Metrics(),
        stopping=store.stopping,
        log=logging.get("test"),
    )
    try:
        with pytest.raises(Exception) as raised:
            await unreachable.start(store.table.settings)
        assert unreachable.classify(raised.value) == Failure.CONNECTION
        assert store.backend.classify(ValueError("a bug")) == Failure.INTERNAL
    finally:
        await unreachable.close()
