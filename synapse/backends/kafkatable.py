"""Keyed tables kept in a one-partition compacted topic, read back through a sentinel.

The marks of ``synapse dlq`` (``kafkamarks.py``), the delivery attempts
(``kafkaattempts.py``) and the service registry (``kafkaregistry.py``) each keep
one record per key in a topic of one partition (``cleanup.policy=compact``: a
real broker keeps the last record per key). Reading one back never trusts end
offsets (tansu under-reports them: docs/kafka.md): the reader produces a record
keyed ``sentinel/<uuid>`` first, then reads the partition from the beginning
until that record comes back; whatever was acknowledged before it is read.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from synapse.backends import kafkaadmin

#: The key prefix of sentinel records: never a table's own key.
SENTINEL = "sentinel/"


def ensure_compacted(bootstrap: str, topic: str) -> None:
    """Create ``topic`` (one partition, compacted) unless it exists."""
    kafkaadmin.ensure_topics(bootstrap, [topic], partitions=1, config={"cleanup.policy": "compact"})


def new_sentinel() -> bytes:
    """A sentinel key no one else writes."""
    return (SENTINEL + uuid.uuid4().hex).encode()


def read_through(
    reader: Consumer, topic: str, sentinel: bytes, timeout_s: float, what: str
) -> Iterator[Message]:
    """Every record of ``topic``'s partition 0 from the beginning up to ``sentinel`` (produced
    just before), in order, other sentinels and read errors left out; ``reader`` is closed
    at the end. No sentinel within ``timeout_s``: ``KafkaException(_TIMED_OUT, what)``."""
    prefix = SENTINEL.encode()
    reader.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for msg in reader.consume(1000, 0.2):
                if msg.error() is not None:
                    continue
                key = msg.key()
                if key == sentinel:
                    return
                if isinstance(key, bytes) and key.startswith(prefix):
                    continue
                yield msg
    finally:
        reader.close()
    raise KafkaException(KafkaError(KafkaError._TIMED_OUT, what))
