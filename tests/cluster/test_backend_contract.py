"""The Backend protocol's contract, run against every implementation: single Redis, Redis
Cluster and Kafka (tansu). Only ``Backend`` methods are used, plus a client of the same
store (``Side``) to append entries, read the copies back and see what is acknowledged.
A case that only one kind of store has stays with it: the refused destination and
``reclaim`` of another consumer's idle entries (Redis, here, parametrised over its two
forms); keys, the commit point and reclaim as the group's rebalance
(tests/kafka/test_backend_kafka.py).

It lives under tests/cluster/ for the cluster fixtures; the single server is the session's,
and Kafka runs on a tansu broker of this module's own.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from redis.cluster import RedisCluster

from synapse import log as logging
from synapse.backend import Backend, Batch
from synapse.backends import kafkaadmin, open_backend
from synapse.config import RoutingTable, load_table
from synapse.errors import Failure
from synapse.metrics import Metrics
from synapse.plan import Planner
from synapse.tansu import TansuBroker
from tests.conftest import wait_for, write_table
from tests.kafka.support import kafka_table, rdkafka_threads

TABLE = """
    version: 1
    router: {{group: {group}, block_ms: 100, claim_idle_ms: 300, batch: 10, max_deliveries: 5}}
    sources: ["{source}"]
    routes:
      - name: all
        match: "*"
        to: ["{out}"]
"""
REDIS_SOURCE, REDIS_OUT = "{c}:in", "{c}:out"
UNREACHABLE = {
    "redis": "redis://127.0.0.1:1/0",
    "cluster": "redis+cluster://127.0.0.1:1",
    "kafka": "kafka://127.0.0.1:1",
}


class Side(Protocol):
    """A client of the store under test, beside the backend."""

    source: str
    out: str

    def add(self, n: int) -> list[bytes]:
        """Append n entries to the source; their entry ids."""
        ...

    def copies(self, n: int) -> list[dict[bytes, bytes]]:
        """The fields of the destination's first n copies."""
        ...

    def settled(self, n: int) -> bool:
        """Whether the group acknowledged the source's first n entries (and no more)."""
        ...

    def close(self) -> None: ...


class RedisSide:
    """A Redis (or Redis Cluster) client: XADD, XRANGE, XPENDING."""

    def __init__(self, client: Any, group: str) -> None:
        self.client, self.group = client, group
        self.source, self.out = REDIS_SOURCE, REDIS_OUT

    def add(self, n: int) -> list[bytes]:
        return [self.client.xadd(self.source, {"type": "t", "n": str(i)}) for i in range(n)]

    def copies(self, n: int) -> list[dict[bytes, bytes]]:
        return [fields for _, fields in self.client.xrange(self.out)][:n]

    def settled(self, n: int) -> bool:
        return int(self.client.xpending(self.source, self.group)["pending"]) == 0

    def close(self) -> None:
        self.client.close()


class KafkaSide:
    """A producer (partition 0 of the source) and readers on the same broker."""

    def __init__(self, broker: TansuBroker, topic: str, group: str) -> None:
        self.bootstrap, self.group = broker.bootstrap, group
        self.source, self.out = f"{topic}.in", f"{topic}.out"
        self.producer = Producer({"bootstrap.servers": self.bootstrap, "acks": "all"})

    def add(self, n: int) -> list[bytes]:
        ids: list[bytes] = []

        def done(err: Any, msg: Any) -> None:
            assert err is None, err
            ids.append(b"%d-%d" % (msg.partition(), msg.offset()))

        for i in range(n):
            self.producer.produce(
                self.source,
                value=b'{"n": %d}' % i,
                headers=[("type", b"t")],
                partition=0,
                on_delivery=done,
            )
        assert self.producer.flush(10) == 0
        return ids

    def copies(self, n: int) -> list[dict[bytes, bytes]]:
        """Read from the start of every partition (assigned, no group: a join takes
        seconds on tansu)."""
        reader = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "unused"})
        meta = reader.list_topics(self.out, timeout=10).topics[self.out]
        reader.assign([TopicPartition(self.out, p, OFFSET_BEGINNING) for p in meta.partitions])
        got: list[dict[bytes, bytes]] = []
        deadline = time.monotonic() + 20
        try:
            while len(got) < n and time.monotonic() < deadline:
                for msg in reader.consume(n - len(got), 0.5):
                    if msg.error() is None:
                        headers = dict(msg.headers() or [])
                        got.append({k.encode(): v for k, v in headers.items()})  # type: ignore[misc]
        finally:
            reader.close()
        return got

    def settled(self, n: int) -> bool:
        """The group's committed offset of partition 0, as a new client reads it back."""
        reader = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group})
        try:
            [tp] = reader.committed([TopicPartition(self.source, 0)], timeout=10)
            return int(tp.offset) == n
        finally:
            reader.close()

    def close(self) -> None:
        self.producer.close()


@dataclass
class Store:
    """A backend under test, the table it routes by, and a client of the same store."""

    kind: str
    backend: Backend
    table: RoutingTable
    side: Side
    stopping: asyncio.Event
    make: Callable[[str], Backend]

    @property
    def source(self) -> str:
        return self.side.source

    async def read_n(self, n: int) -> list[Batch]:
        """Read until n entries came back (a Kafka fetch may take more than one BLOCK)."""
        found: list[Batch] = []

        async def enough() -> bool:
            found.extend(await self.backend.read(self.table.settings, [self.source], 100) or [])
            return sum(len(b.entries) for b in found) >= n

        await wait_for(enough, 20, f"{n} entries read")
        return found

    async def commit_all(self, batch: Batch) -> None:
        plan = Planner(self.table).plan_batch(batch.source, batch.entries, 0, batch.deliveries)
        result = await self.backend.commit(plan, self.table.settings.group)
        assert not result.failed and not result.skipped


@pytest.fixture(scope="module")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """A tansu broker for this module's Kafka cases (memory storage)."""
    with TansuBroker(log_dir=tmp_path_factory.mktemp("tansu")) as b:
        yield b


def _side(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Side, RoutingTable]:
    """The client of the store of ``request.param`` and the table, named for that store."""
    if request.param == "kafka":
        topic = "t." + "".join(c if c.isalnum() else "-" for c in request.node.name)[:200]
        group = f"{topic}.g"
        side: Side = KafkaSide(request.getfixturevalue("tansu"), topic, group)
        text = TABLE.format(group=group, source=side.source, out=side.out)
        return side, kafka_table(tmp_path / "cfg", text)
    if request.param == "redis":
        client: Any = redis.Redis.from_url(request.getfixturevalue("url"))
    else:
        request.getfixturevalue("curl")  # flushed
        node = request.getfixturevalue("local_cluster").primary_nodes()[0]
        client = RedisCluster(host="127.0.0.1", port=node.port)
    side = RedisSide(client, "synapse")
    text = TABLE.format(group="synapse", source=side.source, out=side.out)
    return side, load_table(write_table(tmp_path / "cfg", text))


@pytest.fixture(params=["redis", "cluster", "kafka"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Each backend on its own store, its source set up (discover); on Kafka, once the
    group assigned its partitions; afterwards no Kafka client is left open."""
    side, table = _side(request, tmp_path)
    url = {
        "redis": lambda: request.getfixturevalue("url"),
        "cluster": lambda: request.getfixturevalue("curl"),
        "kafka": lambda: request.getfixturevalue("tansu").url,
    }[request.param]()
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

    try:
        backend = make("c1")
        await backend.start(table.settings)
        assert await backend.discover(table, create=True) == [side.source]
        if request.param == "kafka":

            async def joined() -> bool:
                assert await backend.read(table.settings, [side.source], 100) == []
                return bool(backend.assigned())  # type: ignore[attr-defined]

            await wait_for(joined, 30, "the group's partitions assigned")
        yield Store(request.param, backend, table, side, stopping, make)
    finally:
        for each in made:
            await each.close()
        side.close()
        if request.param == "kafka":
            kafkaadmin.forget_all()
            gc.collect()
            await wait_for(lambda: not rdkafka_threads(), 10, "Kafka clients closed")


async def _pages(pages: Any) -> list[Batch]:
    return [batch async for batch in pages]


async def test_read_hands_new_entries_once_as_first_deliveries(store: Store) -> None:
    """read: new entries per source, in order, deliveries None; a second read has none."""
    ids = store.side.add(3)
    read = await store.read_n(3)
    assert [b.source for b in read] == [store.source] * len(read)
    if store.kind != "kafka":
        assert len(read) == 1  # one XREADGROUP hands all three
    assert [e[0] for b in read for e in b.entries] == ids
    assert all(b.deliveries is None for b in read)
    assert await store.backend.read(store.table.settings, [store.source], 300) == []


async def test_read_returns_none_when_stopped_while_waiting(store: Store) -> None:
    """read: a stop while it waits for entries returns None at once."""
    settings = store.table.settings
    waiting = asyncio.ensure_future(store.backend.read(settings, [store.source], 5000))
    await asyncio.sleep(0.05)  # the read is sent and waits
    store.stopping.set()
    assert await asyncio.wait_for(waiting, 2) is None


async def test_commit_writes_the_copies_and_acknowledges(store: Store) -> None:
    """commit: every copy written with its provenance; the entries acknowledged (Kafka: the
    offset after the last committed); nothing left pending."""
    ids = store.side.add(2)
    [batch] = await store.read_n(2)
    await store.commit_all(batch)
    copies = store.side.copies(2)
    assert sorted(f[b"synapse-id"] for f in copies) == ids
    if store.kind != "kafka":
        assert [f[b"synapse-id"] for f in copies] == ids  # one stream: in order
    assert {f[b"synapse-source"] for f in copies} == {store.source.encode()}
    assert store.side.settled(2)
    settings = store.table.settings
    assert await _pages(store.backend.own_pending(settings, [store.source], counted=True)) == []


@pytest.mark.parametrize("store", ["redis", "cluster"], indirect=True)
async def test_commit_reports_a_refused_destination_and_keeps_the_entry(store: Store) -> None:
    """commit: a destination that refuses (WRONGTYPE) fails its entry, which stays pending."""
    side = store.side
    assert isinstance(side, RedisSide)
    side.client.set(side.out, "not a stream")
    [entry_id] = side.add(1)
    [batch] = await store.read_n(1)
    plan = Planner(store.table).plan_batch(store.source, batch.entries, 0)
    result = await store.backend.commit(plan, store.table.settings.group)
    assert list(result.failed) == [entry_id] and side.out in result.refused[entry_id]
    settings = store.table.settings
    pending = await _pages(store.backend.own_pending(settings, [store.source], counted=False))
    assert [e[0] for b in pending for e in b.entries] == [entry_id]


async def test_own_pending_counts_a_delivery_only_when_asked(store: Store) -> None:
    """own_pending: entries read but not committed come back; counted re-reads add one;
    nothing is acknowledged while they are held."""
    ids = store.side.add(2)
    await store.read_n(2)
    settings = store.table.settings
    [quiet] = await _pages(store.backend.own_pending(settings, [store.source], counted=False))
    assert [e[0] for e in quiet.entries] == ids
    assert dict(quiet.deliveries or {}) == dict.fromkeys(ids, 1)
    [counted] = await _pages(store.backend.own_pending(settings, [store.source], counted=True))
    assert dict(counted.deliveries or {}) == dict.fromkeys(ids, 2)
    assert not store.side.settled(2)
    await store.commit_all(counted)
    assert await _pages(store.backend.own_pending(settings, [store.source], counted=True)) == []
    assert store.side.settled(2)


async def test_retry_later_hands_the_entry_back_when_due_counted(store: Store) -> None:
    """retry_later / next_retry_s / retries_due: the entry is re-delivered after its delay."""
    [entry_id] = store.side.add(1)
    await store.read_n(1)
    assert store.backend.next_retry_s() is None
    store.backend.retry_later(store.source, entry_id, 0.2)
    assert 0 < (store.backend.next_retry_s() or 0) <= 0.2
    await wait_for(lambda: store.backend.next_retry_s() == 0, 5, "due")
    [batch] = await _pages(store.backend.retries_due(store.table.settings))
    assert [e[0] for e in batch.entries] == [entry_id]
    assert dict(batch.deliveries or {}) == {entry_id: 2}
    assert store.backend.next_retry_s() is None


@pytest.mark.parametrize("store", ["redis", "cluster"], indirect=True)
async def test_reclaim_takes_idle_entries_of_another_consumer(store: Store) -> None:
    """reclaim: entries another consumer holds longer than claim_idle_ms become ours, counted."""
    other = store.make("c2")
    ids = store.side.add(2)
    await other.read(store.table.settings, [store.source], 100)
    settings = store.table.settings
    assert await _pages(store.backend.reclaim(settings, [store.source])) == []  # not idle
    found: list[Batch] = []

    async def reclaimed() -> bool:  # once idle for claim_idle_ms (300 ms)
        found[:] = await _pages(store.backend.reclaim(settings, [store.source]))
        return bool(found)

    await wait_for(reclaimed, 5, "entries idle long enough to reclaim")
    [batch] = found
    assert [e[0] for e in batch.entries] == ids
    assert dict(batch.deliveries or {}) == dict.fromkeys(ids, 2)


async def test_classify_names_a_lost_connection(store: Store) -> None:
    """classify: what the store raises when it cannot be reached is a CONNECTION failure;
    a bug is INTERNAL."""
    unreachable = open_backend(
        UNREACHABLE[store.kind],
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
