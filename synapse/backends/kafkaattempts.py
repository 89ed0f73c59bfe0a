"""Delivery attempts for ``max_deliveries`` that survive restarts, in a topic of their own.

tansu drops offset-commit metadata (docs/kafka.md), so attempts cannot ride the
commit. They live in ``synapse.attempts`` (one partition; compacted where the
broker honours it): one record per group, topic and partition, keyed
``<group>/<topic>/<partition>``, valued ``{"offset": O, "attempts": n}``: the
record at offset O was handed out n times without the committed offset moving
past it. Written with ``acks=all`` before the record is routed, and only for the
*head* of a partition (the first record read at the committed offset after an
assignment, and each record of the careful stretch after a crash: see
``synapse/backends/kafka.py``), never on the hot path.

Reading it back: a sentinel record is produced first, then the topic is read
from the beginning until the sentinel comes back, so nothing acknowledged
before is missed (end offsets cannot be trusted on tansu); the last value per
key wins.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from synapse.backends.kafkafailures import CLIENT_LOG_LEVEL

#: The topic of attempts (one partition).
ATTEMPTS_TOPIC = "synapse.attempts"
#: How long reading the topic back may take before it counts as a broker failure.
LOAD_TIMEOUT_S = 30.0
_SENTINEL = "sentinel/"

#: {key: (offset, attempts)}
Table = dict[str, tuple[int, int]]


def key_of(group: str, topic: str, partition: int) -> str:
    return f"{group}/{topic}/{partition}"


class Attempts:
    """Write and read back attempt records (blocking: run in a worker thread)."""

    def __init__(self, bootstrap: str, producer: Producer, topic: str = ATTEMPTS_TOPIC) -> None:
        self.bootstrap = bootstrap
        self.producer = producer
        self.topic = topic

    def record(self, key: str, offset: int, attempts: int) -> None:
        """Write one record with acks=all and wait for its acknowledgement."""
        self._write(key, json.dumps({"offset": offset, "attempts": attempts}).encode())

    def load(self) -> Table:
        """Every key's last record, read through a sentinel written just before."""
        sentinel = _SENTINEL + uuid.uuid4().hex
        self._write(sentinel, b"{}")
        reader = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "synapse-attempts-reader",
                "log_level": CLIENT_LOG_LEVEL,
            }
        )
        reader.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        found: Table = {}
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                for msg in reader.consume(1000, 0.2):
                    if msg.error() is not None:
                        continue
                    raw = msg.key()
                    key = raw.decode() if isinstance(raw, bytes) else ""
                    if key == sentinel:
                        return found
                    if key.startswith(_SENTINEL):
                        continue
                    value: Any = json.loads(msg.value() or b"{}")
                    found[key] = (int(value["offset"]), int(value["attempts"]))
        finally:
            reader.close()
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "attempts topic not read back"))

    def _write(self, key: str, value: bytes) -> None:
        errors: list[KafkaError] = []

        def acknowledged(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                errors.append(err)

        self.producer.produce(self.topic, value=value, key=key.encode(), on_delivery=acknowledged)
        if self.producer.flush(LOAD_TIMEOUT_S) or errors:
            raise KafkaException(errors[0] if errors else KafkaError(KafkaError._MSG_TIMED_OUT))
