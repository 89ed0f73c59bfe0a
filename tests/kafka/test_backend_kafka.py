"""What only the Kafka backend promises, against tansu (the contract every backend keeps,
Kafka included, is tests/cluster/test_backend_contract.py): keys kept on the copies, the
commit point held by a record not yet acknowledged, reclaim as the group's rebalance, a
partition error amid a fetch, close leaving no client connected."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from structlog.testing import capture_logs

from synapse import log as logging
from synapse.backend import Batch
from synapse.backends import kafkaadmin, kafkaconfig, open_backend
from synapse.backends.kafka import KafkaBackend
from synapse.backends.kafkahandout import hand_out
from synapse.config import RoutingTable
from synapse.errors import Failure
from synapse.metrics import Metrics
from synapse.plan import Planner
from synapse.tansu import TansuBroker
from tests.kafka.support import TYPE_T, produce, rdkafka_threads
from tests.support.batches import TABLE, commit_all, numbered, read_n
from tests.support.polling import wait_for


@dataclass
class Store:
    """A Kafka backend under test, the table it routes by, and its broker."""

    backend: KafkaBackend
    table: RoutingTable
    broker: TansuBroker
    source: str
    out: str
    stopping: asyncio.Event

    def add(self, n: int, key: bytes | None = None) -> list[bytes]:
        """Append n records to partition 0 of the source; their entry ids."""
        values = numbered(n)
        return produce(
            self.broker.bootstrap, self.source, values, headers=TYPE_T, key=key, partition=0
        )

    async def read_n(self, n: int) -> list[Batch]:
        return await read_n(self.backend, self.table, self.source, n)

    async def commit_all(self, batch: Batch) -> None:
        await commit_all(self.backend, self.table, batch)

    def committed(self) -> int:
        """The group's committed offset of partition 0, as a new client reads it back."""
        reader = Consumer(
            {"bootstrap.servers": self.broker.bootstrap, "group.id": self.table.settings.group}
        )
        try:
            [tp] = reader.committed([TopicPartition(self.source, 0)], timeout=10)
            return int(tp.offset)
        finally:
            reader.close()

    def copies(self, n: int) -> list[tuple[bytes | None, dict[str, bytes]]]:
        """n records of the destination (key, headers), read from the start of every
        partition (assigned, no group: a group join takes seconds on tansu)."""
        reader = Consumer({"bootstrap.servers": self.broker.bootstrap, "group.id": "unused"})
        meta = reader.list_topics(self.out, timeout=10).topics[self.out]
        reader.assign([TopicPartition(self.out, p, OFFSET_BEGINNING) for p in meta.partitions])
        got: list[tuple[bytes | None, dict[str, bytes]]] = []
        deadline = time.monotonic() + 20
        try:
            while len(got) < n and time.monotonic() < deadline:
                for msg in reader.consume(n - len(got), 0.5):
                    if msg.error() is None:
                        got.append((msg.key(), dict(msg.headers() or [])))  # type: ignore[arg-type]
        finally:
            reader.close()
        return got


@dataclass
class HeldBack:
    """The backend's consume calls, each started on the consumer's thread but reading (the
    real consume, waiting up to ``wait_s`` for records) only once ``release`` is set."""

    started: threading.Event
    release: threading.Event


@contextlib.contextmanager
def consume_held_back(backend: KafkaBackend, wait_s: float) -> Iterator[HeldBack]:
    group, held = backend._group, HeldBack(threading.Event(), threading.Event())
    consume = group.consume

    def when_released(n: int) -> list[Message]:
        held.started.set()
        assert group.kafka is not None and held.release.wait(5)
        return group.kafka.consume(n, wait_s)

    async def held_back(n: int, timeout_s: float) -> list[Message]:
        found: list[Message] = await group.call(when_released, n)
        return found

    group.consume = held_back  # type: ignore[method-assign]
    try:
        yield held
    finally:
        group.consume = consume  # type: ignore[method-assign]


async def _pages(pages: Any) -> list[Batch]:
    return [batch async for batch in pages]


@contextlib.asynccontextmanager
async def _store_on(
    broker: TansuBroker, topic: str, table_from: Callable[..., RoutingTable]
) -> AsyncIterator[Store]:
    """A backend subscribed to its own source topic, with its partitions assigned."""
    source, out = f"{topic}.in", f"{topic}.out"
    table = table_from(TABLE.format(group=f"{topic}.g", source=source, out=out))
    stopping = asyncio.Event()
    backend = open_backend(
        broker.url,
        consumer="c1",
        password=None,
        block_ms=100,
        metrics=Metrics(),
        stopping=stopping,
        log=logging.get("test"),
    )
    assert isinstance(backend, KafkaBackend)
    made = Store(backend, table, broker, source, out, stopping)
    try:
        await backend.start(table.settings)
        assert await backend.discover(table, create=True) == [source]

        async def joined() -> bool:
            assert await backend.read(table.settings, [source], 100) == []
            return bool(backend.assigned())

        await wait_for(joined, 30, "the group's partitions assigned")
        yield made
    finally:
        await backend.close()


@pytest.fixture
async def store(
    broker: TansuBroker, topic: str, table_from: Callable[..., RoutingTable]
) -> AsyncIterator[Store]:
    """A backend on the session's broker (``_store_on``)."""
    async with _store_on(broker, topic, table_from) as made:
        yield made


async def test_commit_keeps_the_source_key_on_every_copy(store: Store) -> None:
    """commit: every copy produced with the source record's key (and provenance); the offset
    after the last record committed; nothing left held."""
    ids = store.add(2, key=b"k1")
    [batch] = await store.read_n(2)
    await store.commit_all(batch)
    copies = store.copies(2)
    assert sorted(h["synapse-id"] for _, h in copies) == ids
    assert {k for k, _ in copies} == {b"k1"}
    assert {h["synapse-source"] for _, h in copies} == {store.source.encode()}
    assert store.committed() == 2
    settings = store.table.settings
    assert await _pages(store.backend.own_pending(settings, [store.source], counted=True)) == []


async def test_retry_later_holds_the_commit_point_and_hands_the_entry_back(
    store: Store,
) -> None:
    """retry_later: the entry comes back when due, counted; while it waits, a later record's
    commit does not move the partition's offset past it."""
    first, second = store.add(2)
    [batch] = await store.read_n(2)
    store.backend.retry_later(store.source, first, 0.2)
    assert 0 < (store.backend.next_retry_s() or 0) <= 0.2
    await store.commit_all(Batch(store.source, [batch.entries[1]]))
    assert store.committed() == 0  # held by the first record
    await wait_for(lambda: store.backend.next_retry_s() == 0, 5, "due")
    [again] = await _pages(store.backend.retries_due(store.table.settings))
    assert [e[0] for e in again.entries] == [first] and dict(again.deliveries or {}) == {first: 2}
    assert store.backend.next_retry_s() is None
    await store.commit_all(again)
    assert store.committed() == 2
    assert second  # committed with the first


async def test_reclaim_is_the_groups_rebalance(store: Store, broker: TansuBroker) -> None:
    """reclaim: nothing per record on Kafka; a router that goes away without committing
    leaves its uncommitted tail to the next member of the group, from the committed offset."""
    ids = store.add(3)
    [batch] = await store.read_n(3)
    await store.commit_all(Batch(store.source, batch.entries[:1]))
    settings = store.table.settings
    assert await _pages(store.backend.reclaim(settings, [store.source])) == []
    await store.backend.close()  # gone: entries 2 and 3 never acknowledged
    other = open_backend(
        broker.url,
        consumer="c2",
        password=None,
        block_ms=100,
        metrics=Metrics(),
        stopping=asyncio.Event(),
        log=logging.get("test"),
    )
    try:
        await other.start(settings)
        await other.discover(store.table, create=False)
        found: list[bytes] = []

        async def tail() -> bool:
            for b in await other.read(settings, [store.source], 100) or []:
                found.extend(e[0] for e in b.entries)
            return len(found) >= 2

        await wait_for(tail, 30, "the uncommitted tail re-read by the next member")
        assert found == ids[1:]
    finally:
        await other.close()


async def test_close_leaves_no_client_connected(store: Store) -> None:
    """close: the consumer, the producer and the admin client of the backend are closed (none
    would reconnect to a broker that stopped); closing again is harmless."""
    assert rdkafka_threads()  # open: its clients run threads of their own
    await store.backend.close()
    await store.backend.close()
    assert store.broker.bootstrap not in kafkaadmin._clients
    gc.collect()
    await wait_for(lambda: not rdkafka_threads(), 10, lambda: f"closed: {rdkafka_threads()}")


async def test_a_partition_error_is_raised_once_the_records_read_with_it_are_held(
    store: Store,
) -> None:
    """read: an error for one partition amid a fetch is raised after every record of the
    fetch is held (own_pending hands them out next): none is dropped past the position."""
    record = {"value": b'{"n": 1}', "headers": [("type", b"t")]}
    fetched = [
        Message(topic=store.source, partition=0, offset=0, **record),
        Message(topic=store.source, partition=1, error=KafkaError(KafkaError.UNKNOWN)),
        Message(topic=store.source, partition=0, offset=1, **record),
    ]
    with pytest.raises(KafkaException) as raised:
        backend = store.backend
        await hand_out(
            fetched,
            store.table.settings,
            backend._held,
            backend._heads,
            backend._group,
            backend._data_field,
        )
    assert store.backend.classify(raised.value) == Failure.RESPONSE
    settings = store.table.settings
    [held] = await _pages(store.backend.own_pending(settings, [store.source], counted=False))
    assert [e[0] for e in held.entries] == [b"0-0", b"0-1"]


async def test_a_broker_back_without_its_topics_is_read_from_its_own_offsets(
    topic: str, table_from: Callable[..., RoutingTable], tmp_path: Path
) -> None:
    """Every broker away while records are held, then one back on the same address with no
    topics (tansu: memory only): the backend starts over (a new consumer, nothing held), and
    the new broker's records are read and committed from offset 0, not the old positions."""
    own = TansuBroker(log_dir=tmp_path / "tansu").start()
    try:
        async with _store_on(own, topic, table_from) as store:
            settings = store.table.settings
            store.add(3)
            await store.read_n(3)  # held, never committed
            own.kill()

            async def down() -> bool:
                try:
                    await store.backend.read(settings, [store.source], 100)
                except KafkaException as exc:
                    return store.backend.classify(exc) == Failure.CONNECTION
                return False

            await wait_for(down, 30, "every broker away, raised by a read")
            own.start()  # the same port, no topics
            await store.backend.start(settings)
            pending = store.backend.own_pending(settings, [store.source], counted=False)
            assert await _pages(pending) == []
            assert await store.backend.discover(store.table, create=True) == [store.source]
            ids = store.add(2)
            assert ids == [b"0-0", b"0-1"]  # numbered from 0 again
            read = await store.read_n(2)
            assert [e[0] for b in read for e in b.entries] == ids
            for batch in read:
                await store.commit_all(batch)
            assert store.committed() == 2
    finally:
        own.stop()


async def test_a_read_ahead_only_on_a_backlog_and_a_dropped_one_loses_nothing(
    store: Store,
) -> None:
    """read_ahead: none after a read that was not full; after a full one, the records the
    consumer fetched, in order. A read ahead the pipeline drops (cancelled mid-consume) loses
    nothing: each of its records ends up held (own pending) whether its consume ran or the
    next read takes it, and none is handed out twice."""
    settings, source = store.table.settings, store.source
    assert store.backend.read_ahead(settings, [source], [Batch(source, [])]) is None
    full = [Batch(source, [(b"0-0", [])] * settings.batch)]
    ids = store.add(6)
    got: list[bytes] = []

    async def read_ahead() -> bool:
        ahead = store.backend.read_ahead(settings, [source], full)
        assert ahead is not None
        got.extend(e[0] for b in await ahead for e in b.entries)
        return len(got) >= len(ids)

    await wait_for(read_ahead, 20, "the records read ahead")
    assert got == ids
    for batch in await _pages(store.backend.own_pending(settings, [source], counted=False)):
        await store.commit_all(batch)

    more = store.add(3 * settings.batch)
    # The dropped read's consume starts on the consumer's thread, and reads only once the
    # pipeline has cancelled it.
    with consume_held_back(store.backend, 1.0) as consume:
        ahead = store.backend.read_ahead(settings, [source], full)
        assert ahead is not None
        assert await asyncio.to_thread(consume.started.wait, 5)
        ahead.cancel()
        consume.release.set()
    read: list[bytes] = []

    async def every_record_held() -> bool:
        read.extend(
            e[0] for b in await store.backend.read(settings, [source], 100) or [] for e in b.entries
        )
        assert len(read) == len(set(read)), "a record handed out twice"
        held = [
            e[0]
            for b in await _pages(store.backend.own_pending(settings, [source], counted=False))
            for e in b.entries
        ]
        return held == more

    await wait_for(every_record_held, 20, "every record of the dropped read held")
    assert set(read) <= set(more)


async def test_a_copy_refused_after_sending_fails_its_entry_which_stays_held(
    topic: str,
    table_from: Callable[..., RoutingTable],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The producer hears of a refusal only in its delivery report (delivery.report.only
    .error): a broker that stops answering times a copy out; the commit reports the entry
    failed with the refusing topic, it stays held (the commit point does not pass it), and
    it commits once the broker answers again."""
    settings_file = tmp_path / "kafka.properties"
    settings_file.write_text("message.timeout.ms=1500\n")
    monkeypatch.setenv(kafkaconfig.ENV, str(settings_file))
    own = TansuBroker(log_dir=tmp_path / "tansu").start()
    try:
        async with _store_on(own, topic, table_from) as store:
            settings = store.table.settings
            store.add(1)
            [first] = await store.read_n(1)
            await store.commit_all(first)
            assert store.committed() == 1
            [entry_id] = store.add(1)
            [batch] = await store.read_n(1)
            plan = Planner(store.table).plan_batch(store.source, batch.entries, 0)
            assert own.process is not None
            own.process.send_signal(signal.SIGSTOP)
            try:
                result = await store.backend.commit(plan, settings.group)
            finally:
                own.process.send_signal(signal.SIGCONT)
            assert list(result.failed) == [entry_id]
            assert list(result.refused[entry_id]) == [store.out]
            assert "timed out" in result.refused[entry_id][store.out].lower()
            pending = await _pages(
                store.backend.own_pending(settings, [store.source], counted=True)
            )
            assert [e[0] for b in pending for e in b.entries] == [entry_id]
            assert store.committed() == 1
            await store.commit_all(pending[0])
            assert store.committed() == 2
    finally:
        own.stop()


async def test_a_dropped_read_ahead_is_held_before_own_pending_and_the_next_read(
    store: Store,
) -> None:
    """A read ahead the pipeline drops while its consume still runs (a failed turn): the
    set-up's interrupt waits for it, so own pending hands out its records, and the next read
    takes the records after them; none is stranded behind the commit point, none read twice."""
    settings, source = store.table.settings, store.source
    full = [Batch(source, [(b"0-0", [])] * settings.batch)]
    more = store.add(2 * settings.batch)
    with consume_held_back(store.backend, 2.0) as consume:
        ahead = store.backend.read_ahead(settings, [source], full)
        assert ahead is not None
        assert await asyncio.to_thread(consume.started.wait, 5)
        ahead.cancel()
        interrupted = asyncio.ensure_future(store.backend.interrupt())
        await asyncio.sleep(0.05)
        assert not interrupted.done()  # waits for the read ahead
        consume.release.set()
        await interrupted
    [pending] = await _pages(store.backend.own_pending(settings, [source], counted=True))
    first = [e[0] for e in pending.entries]
    assert first and first == more[: len(first)]
    read: list[bytes] = []

    async def the_rest_read() -> bool:
        read.extend(
            e[0] for b in await store.backend.read(settings, [source], 100) or [] for e in b.entries
        )
        return len(first) + len(read) >= len(more)

    await wait_for(the_rest_read, 20, "the records after the read ahead's")
    assert first + read == more


async def test_an_empty_read_ahead_leaves_every_broker_away_to_the_next_read(
    topic: str, table_from: Callable[..., RoutingTable], tmp_path: Path
) -> None:
    """Every broker away: a read ahead that finds nothing returns nothing and does not take
    the outage for itself (a dropped one would hide it from the commit and the loop); the
    next read raises it as a connection failure."""
    own = TansuBroker(log_dir=tmp_path / "tansu").start()
    try:
        async with _store_on(own, topic, table_from) as store:
            settings, source = store.table.settings, store.source
            full = [Batch(source, [(b"0-0", [])] * settings.batch)]
            own.kill()

            async def seen_down() -> bool:
                ahead = store.backend.read_ahead(settings, [source], full)
                assert ahead is not None
                assert await ahead == []
                return store.backend._watch._pending is not None

            await wait_for(seen_down, 30, "every broker away, seen by the client")
            assert await store.backend.read_ahead(settings, [source], full) == []  # type: ignore[misc]
            with pytest.raises(KafkaException) as raised:
                await store.backend.read(settings, [source], 100)
            assert store.backend.classify(raised.value) == Failure.CONNECTION
    finally:
        own.stop()


async def test_records_held_across_a_new_data_field_are_copied_from_their_fields(
    store: Store,
) -> None:
    """A table swap that renames the data field while records are held: their copies are
    built from the entry's fields under the new name (the one mapping), not from the
    record's value and headers as read under the old one."""
    settings = store.table.settings
    [entry_id] = store.add(1)
    [batch] = await store.read_n(1)
    await store.backend.start(dataclasses.replace(settings, data_field="body"))
    plan = Planner(store.table).plan_batch(store.source, batch.entries, 0)
    result = await store.backend.commit(plan, settings.group)
    assert not result.failed and not result.skipped
    [(_, headers)] = store.copies(1)
    assert headers["synapse-id"] == entry_id
    assert headers["data"] == b'{"n": 0}'  # no field is named "body": "data" stays a header


async def test_a_dropped_read_ahead_that_failed_still_holds_what_it_read(
    store: Store,
) -> None:
    """A read ahead whose fetch carried a partition error, dropped by the pipeline: the
    error is logged when the set-up waits for it, and the records read with it are held
    (own pending hands them out)."""
    settings, source = store.table.settings, store.source
    full = [Batch(source, [(b"0-0", [])] * settings.batch)]
    record = {"value": b'{"n": 1}', "headers": [("type", b"t")]}
    fetched = [
        Message(topic=source, partition=0, offset=0, **record),
        Message(topic=source, partition=1, error=KafkaError(KafkaError.UNKNOWN)),
    ]
    group = store.backend._group
    consume = group.consume

    async def consume_fetched(n: int, timeout_s: float) -> list[Message]:
        return fetched

    group.consume = consume_fetched  # type: ignore[method-assign]
    try:
        ahead = store.backend.read_ahead(settings, [source], full)
        assert ahead is not None
        ahead.cancel()
        with capture_logs() as logs:
            await store.backend.interrupt()
    finally:
        group.consume = consume  # type: ignore[method-assign]
    [held] = await _pages(store.backend.own_pending(settings, [source], counted=False))
    assert [e[0] for e in held.entries] == [b"0-0"]
    assert [log["event"] for log in logs] == ["read_ahead_failed"]
    assert "UNKNOWN" in logs[0]["error"]


async def test_offsets_are_committed_only_for_partitions_still_assigned(
    broker: TansuBroker, topic: str, table_from: Callable[..., RoutingTable]
) -> None:
    """A rebalance between working out a commit's offsets and sending it (a read ahead's
    consume ran it): only the partitions still assigned are committed; the one another
    member now owns keeps the offset its owner reads from."""
    source = f"{topic}.in"
    kafkaadmin.ensure_topics(broker.bootstrap, [source], partitions=2)
    async with _store_on(broker, topic, table_from) as store:
        settings, backend = store.table.settings, store.backend

        async def both() -> bool:
            await backend.read(settings, [source], 100)
            return len(backend.assigned()) == 2

        await wait_for(both, 60, "both partitions assigned")
        other = Consumer(
            {"bootstrap.servers": broker.bootstrap, "group.id": settings.group, "client.id": "b"}
        )
        other.subscribe([source])
        try:

            async def shared() -> bool:
                await backend.read(settings, [source], 100)
                await asyncio.to_thread(other.consume, 1, 0.1)
                return len(backend.assigned()) == 1 and len(other.assignment()) == 1

            await wait_for(shared, 60, "the partitions shared with a second member")
            [(_, mine)] = backend.assigned()
            done = await backend._group.commit([TopicPartition(source, p, 7) for p in (0, 1)])
            assert [(tp.partition, tp.offset) for tp in done] == [(mine, 7)]
            reader = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": settings.group})
            try:
                found = reader.committed([TopicPartition(source, p) for p in (0, 1)], timeout=10)
            finally:
                reader.close()
            offsets = {tp.partition: tp.offset for tp in found}
            assert offsets[mine] == 7 and offsets[1 - mine] != 7
        finally:
            other.close()
