"""The shared Kafka write and read-back helpers (synapse/backends/kafkaproduce.py,
kafkatable.py): refusals and timeouts become KafkaException, a full local queue waits,
a read-back stops at its own sentinel and times out without it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from synapse.backends import kafkatable
from synapse.backends.kafkaproduce import Refusals, produce, produce_one, settle
from synapse.kafka.records import Record
from synapse.tansu import TansuBroker

#: A port nothing listens on: every send stays unacknowledged.
NOWHERE = "127.0.0.1:1"


def _unreachable(**extra: object) -> Producer:
    return Producer({"bootstrap.servers": NOWHERE, "acks": "all", "log_level": 0, **extra})


@pytest.fixture
def stranded() -> Iterator[Producer]:
    """A producer whose broker never answers; purged and closed after the test."""
    producer = _unreachable(**{"message.timeout.ms": 60_000})
    yield producer
    producer.purge()
    producer.flush(0)
    producer.close()


def test_settle_raises_timed_out_with_the_reason_when_a_record_is_unacknowledged(
    stranded: Producer,
) -> None:
    """settle: a record still unacknowledged at the deadline is _MSG_TIMED_OUT with reason."""
    refusals = Refusals()
    produce(stranded, "t", Record(b"v", [], None), refusals)
    with pytest.raises(KafkaException) as raised:
        settle(stranded, refusals.errors, 0.2, "publish not acknowledged")
    error = raised.value.args[0]
    assert error.code() == KafkaError._MSG_TIMED_OUT
    assert "publish not acknowledged" in error.str()


def test_settle_raises_the_first_refusal_and_a_full_queue_waits_for_room() -> None:
    """produce: with the local queue full it polls until room frees (the first record
    refused by its delivery timeout); settle raises that refusal, not a timeout."""
    producer = _unreachable(**{"message.timeout.ms": 300, "queue.buffering.max.messages": 1})
    try:
        refusals = Refusals()
        produce(producer, "t", Record(b"1", [], None), refusals)
        produce(producer, "t", Record(b"2", [], None), refusals)  # BufferError until 1 fails
        assert len(refusals.errors) == 1
        with pytest.raises(KafkaException) as raised:
            settle(producer, refusals.errors, 10)
        assert raised.value.args[0].code() == KafkaError._MSG_TIMED_OUT
        assert len(refusals.errors) == 2
    finally:
        producer.close()


def test_read_through_stops_at_its_sentinel_and_skips_others(
    broker: TansuBroker, topic: str
) -> None:
    """read_through: records before the sentinel, in order, other sentinels left out."""
    kafkatable.ensure_compacted(broker.bootstrap, topic)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    try:
        produce_one(producer, topic, b"a", b"1", 10)
        produce_one(producer, topic, kafkatable.new_sentinel(), None, 10)
        produce_one(producer, topic, b"b", b"2", 10)
        mine = kafkatable.new_sentinel()
        produce_one(producer, topic, mine, None, 10)
        produce_one(producer, topic, b"c", b"3", 10)  # after the sentinel: not read
    finally:
        producer.close()
    reader = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "test-reader"})
    got = [m.key() for m in kafkatable.read_through(reader, topic, mine, 30, "x")]
    assert got == [b"a", b"b"]


def test_read_through_times_out_without_its_sentinel(broker: TansuBroker, topic: str) -> None:
    """read_through: no sentinel within the timeout is _TIMED_OUT naming what was read."""
    kafkatable.ensure_compacted(broker.bootstrap, topic)
    reader = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "test-reader"})
    missing = kafkatable.new_sentinel()
    with pytest.raises(KafkaException) as raised:
        list(kafkatable.read_through(reader, topic, missing, 1.0, "the table not read back"))
    error = raised.value.args[0]
    assert error.code() == KafkaError._TIMED_OUT
    assert "the table not read back" in error.str()
