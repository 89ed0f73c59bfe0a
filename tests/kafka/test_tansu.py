"""What the test broker can and cannot do (docs/kafka.md "The test broker"), pinned."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata
from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as Partition

from synapse.errors import SynapseError
from synapse.tansu import TansuBroker
from tests.kafka.support import produce


async def make_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def test_produce_with_acks_all_and_consume_in_a_group(
    broker: TansuBroker, topic: str
) -> None:
    """Records produced with acks=all come back to a group consumer with key and headers."""
    await make_topic(broker.bootstrap, topic, 3)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(9):
            await producer.send_and_wait(
                topic, b'{"n": %d}' % i, key=b"k%d" % (i % 3), headers=[("type", b"t.v1")]
            )
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id=topic,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    got = []
    try:
        deadline = time.monotonic() + 20
        while len(got) < 9 and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got.extend(records)
    finally:
        await consumer.stop()
    assert sorted(r.value for r in got) == sorted(b'{"n": %d}' % i for i in range(9))
    assert {r.headers for r in got} == {(("type", b"t.v1"),)}
    by_key: dict[bytes | None, set[int]] = {}
    for r in got:
        by_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(parts) == 1 for parts in by_key.values())  # a key stays on one partition


async def test_committed_offsets_survive_the_consumer_but_not_their_metadata(
    broker: TansuBroker, topic: str
) -> None:
    """An offset commit is read back by a new consumer; its metadata string comes back empty."""
    await make_topic(broker.bootstrap, topic, 1)
    tp = TopicPartition(topic, 0)
    first = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=topic)
    await first.start()
    try:
        first.assign([tp])
        await first.commit({tp: OffsetAndMetadata(5, '{"attempts": 2}')})
    finally:
        await first.stop()
    second = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=topic)
    await second.start()
    try:
        assert await second.committed(tp) == 5
        fetched = await second._coordinator.fetch_committed_offsets([tp])
    finally:
        await second.stop()
    assert fetched[tp] == OffsetAndMetadata(5, "")  # tansu drops commit metadata


async def test_idempotent_producer_is_refused(broker: TansuBroker, topic: str) -> None:
    """InitProducerId fails on tansu: no idempotent (so no transactional) producer."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True)
    with pytest.raises(KafkaError):
        await asyncio.wait_for(producer.start(), 20)
    await producer.stop()


def test_memory_storage_loses_everything_on_restart(tmp_path: Path) -> None:
    """A restarted tansu has no topics: broker-restart durability cannot be tested on it."""

    async def topics(bootstrap: str) -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    with TansuBroker(log_dir=tmp_path) as b:
        asyncio.run(make_topic(b.bootstrap, "kept.or.not", 1))
        assert "kept.or.not" in asyncio.run(topics(b.bootstrap))
        b.kill()
        b.start()
        assert "kept.or.not" not in asyncio.run(topics(b.bootstrap))


def test_a_broker_that_cannot_bind_is_a_clear_error(tmp_path: Path) -> None:
    """Starting on a port already taken fails with tansu's own output, not a hang."""
    with TansuBroker(log_dir=tmp_path / "a") as first:
        second = TansuBroker(log_dir=tmp_path / "b", port=first.port)
        with pytest.raises(SynapseError, match="tansu exited"):
            second.start(timeout_s=10)
        assert first.accepts()


async def test_end_offsets_under_report_batched_produce(broker: TansuBroker, topic: str) -> None:
    """Every acknowledged record is consumed back, but ListOffsets(latest) reports less:
    on tansu, lag and copy counts cannot come from end offsets (docs/kafka.md)."""
    await make_topic(broker.bootstrap, topic, 1)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        sent = [await producer.send(topic, b"v%d" % i) for i in range(2000)]
        acked = await asyncio.gather(*sent)
    finally:
        await producer.stop()
    tp = TopicPartition(topic, 0)
    assert max(md.offset for md in acked) == 1999
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    offsets: set[int] = set()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        deadline = time.monotonic() + 20
        while len(offsets) < 2000 and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                offsets.update(r.offset for r in records)
    finally:
        await consumer.stop()
    assert offsets == set(range(2000))
    assert end < 2000, "tansu now reports end offsets right: update docs/kafka.md"


def test_a_fetch_past_the_under_reported_end_offset_reads_the_records(
    broker: TansuBroker, topic: str
) -> None:
    """Fetching from an offset past what ListOffsets(latest) reports after batched produce
    still reads every record up to the real end: only ListOffsets under-reports, a consumer
    positioned there does not stall (docs/kafka.md)."""
    asyncio.run(make_topic(broker.bootstrap, topic, 1))
    ids = produce(broker.bootstrap, topic, [b"x" * 300] * 3000)
    assert ids[-1] == b"0-2999"
    reader = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused"})
    try:
        _low, reported = reader.get_watermark_offsets(Partition(topic, 0), timeout=10)
        assert reported < 3000, "tansu now reports end offsets right: update docs/kafka.md"
        start = reported + 5
        reader.assign([Partition(topic, 0, start)])
        offsets: list[int] = []
        deadline = time.monotonic() + 20
        while len(offsets) < 3000 - start and time.monotonic() < deadline:
            offsets += [m.offset() or 0 for m in reader.consume(1000, 0.5) if m.error() is None]
    finally:
        reader.close()
    assert offsets == list(range(start, 3000))
