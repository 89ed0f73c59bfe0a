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
from typing import Any

from confluent_kafka import (
    Consumer,
    Producer,
)

from synapse.backends import kafkatable
from synapse.backends.kafkaconfig import client_config
from synapse.backends.kafkafailures import CLIENT_LOG_LEVEL
from synapse.backends.kafkaproduce import produce_one

#: The topic of attempts (one partition).
ATTEMPTS_TOPIC = "synapse.attempts"
#: How long reading the topic back may take before it counts as a broker failure.
LOAD_TIMEOUT_S = 30.0

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

    def ensure_topic(self) -> None:
        """Create the attempts topic (one partition, compacted) unless it exists."""
        kafkatable.ensure_compacted(self.bootstrap, self.topic)

    def record(self, key: str, offset: int, attempts: int) -> None:
        """Write one record with acks=all and wait for its acknowledgement."""
        self._write(key, json.dumps({"offset": offset, "attempts": attempts}).encode())

    def load(self) -> Table:
        """Every key's last record, read through a sentinel written just before."""
        sentinel = kafkatable.new_sentinel()
        self._write(sentinel.decode(), b"{}")
        reader = Consumer(
            client_config(
                self.bootstrap,
                {"group.id": "synapse-attempts-reader", "log_level": CLIENT_LOG_LEVEL},
            )
        )
        found: Table = {}
        for msg in kafkatable.read_through(
            reader, self.topic, sentinel, LOAD_TIMEOUT_S, "attempts topic not read back"
        ):
            raw = msg.key()
            key = raw.decode() if isinstance(raw, bytes) else ""
            value: Any = json.loads(msg.value() or b"{}")
            found[key] = (int(value["offset"]), int(value["attempts"]))
        return found

    def _write(self, key: str, value: bytes) -> None:
        produce_one(self.producer, self.topic, key.encode(), value, LOAD_TIMEOUT_S)
