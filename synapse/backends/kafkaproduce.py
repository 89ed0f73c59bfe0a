"""Producing with ``acks=all`` and waiting for every acknowledgement (blocking calls).

One place for what every Kafka writer does: produce a record, and when the
producer's local queue is full let acknowledgements drain it (``poll``) and try
again; then ``flush`` and turn the first refusal, or what is still unacknowledged
when the wait ends, into a ``KafkaException``. The router's commit
(``kafkacommit.py``), the commands' sender (``kafkaops.Sender``), the Bus's publish
(``synapse/client/kafka_store.py``), the Bus's dedupe marks (``kafka_marks.py``), the
registry and the attempts topic all write through here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from synapse.kafka.records import Record

#: How long one wait for the local queue to drain lasts before producing again.
QUEUE_FULL_POLL_S = 0.05

#: What librdkafka calls with each record's outcome: (error or None, the message).
OnDelivery = Callable[[KafkaError | None, Message], None]


class Refusals:
    """An ``on_delivery`` callback that keeps every refusal, in order."""

    def __init__(self) -> None:
        self.errors: list[KafkaError] = []

    def __call__(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.errors.append(err)


def produce(producer: Producer, topic: str, record: Record, on_delivery: OnDelivery) -> None:
    """Hand one record to the producer, waiting while its local queue is full. A record
    refused before sending (too large, a bad topic) raises ``KafkaException``."""
    headers: Any = record.headers  # list is invariant: the stub wants str | bytes | None
    while True:
        try:
            producer.produce(
                topic, value=record.value, key=record.key, headers=headers, on_delivery=on_delivery
            )
            return
        except BufferError:  # the local queue is full: let acknowledgements drain it
            producer.poll(QUEUE_FULL_POLL_S)


def settle(
    producer: Producer, errors: list[KafkaError], timeout_s: float, reason: str | None = None
) -> None:
    """Wait up to ``timeout_s`` for every record produced; the first of ``errors`` (what
    the records' ``on_delivery`` collected) as a ``KafkaException``, or ``_MSG_TIMED_OUT``
    (with ``reason``) when some record is still unacknowledged."""
    left = producer.flush(timeout_s)
    if errors:
        raise KafkaException(errors[0])
    if left:
        timed_out = (
            KafkaError(KafkaError._MSG_TIMED_OUT)
            if reason is None
            else KafkaError(KafkaError._MSG_TIMED_OUT, reason)
        )
        raise KafkaException(timed_out)


def produce_one(
    producer: Producer,
    topic: str,
    key: bytes,
    value: bytes | None,
    timeout_s: float,
    reason: str | None = None,
) -> None:
    """Produce one record (``value`` None: a tombstone) and wait for its acknowledgement."""
    refusals = Refusals()
    produce(producer, topic, Record(value, [], key), refusals)
    settle(producer, refusals.errors, timeout_s, reason)
