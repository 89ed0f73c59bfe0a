"""What the ``synapse`` commands did to Kafka records that cannot be deleted, in one topic.

Kafka cannot delete one record, so ``synapse dlq`` keeps its bookkeeping beside the
dead-letter topic, in ``synapse.marks`` (one partition; ``cleanup.policy=compact``, so
a real broker keeps the last record per key), keyed:

- ``handled/<dead-letter topic>/<partition>-<offset>``: the dead letter was redriven
  (``{"action": "redriven", "to", "new_id", "ms"}``) or purged (``{"action": "purged"}``);
  ``dlq list`` shows only dead letters with no such mark: what is still outstanding.
- ``redrives/<topic>/<partition>-<offset>``: how many times the event at that position
  (a redriven copy) was redriven before, so its next dead letter carries the count
  (never from a header, which a producer could set): ``{"count": n}``.
- ``replay/<source>|<destination>|<filter hash>``: a replay's checkpoint,
  ``{"next": {partition: offset}, "copied": n}``.

Reading back: a sentinel record is produced first and the topic read from the start
until it comes back (end offsets cannot be trusted on tansu); the last value per key wins.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from synapse.backends import kafkaadmin, kafkaops
from synapse.kafka.records import Record

#: The topic of marks (one partition, compacted).
MARKS_TOPIC = "synapse.marks"
_SENTINEL = "sentinel/"


def handled_key(dead_letters: str, letter_id: str) -> str:
    return f"handled/{dead_letters}/{letter_id}"


def redrives_key(topic: str, record_id: str) -> str:
    return f"redrives/{topic}/{record_id}"


def replay_key(source: str, dest: str, digest: str) -> str:
    return f"replay/{source}|{dest}|{digest}"


class Marks:
    """Write marks and read them all back (blocking)."""

    def __init__(self, bootstrap: str, sender: kafkaops.Sender, topic: str = MARKS_TOPIC) -> None:
        self.bootstrap = bootstrap
        self.sender = sender
        self.topic = topic
        self._ready = False

    def ensure(self) -> None:
        if not self._ready:
            kafkaadmin.ensure_topics(
                self.bootstrap, [self.topic], partitions=1, config={"cleanup.policy": "compact"}
            )
            self._ready = True

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Write one mark with acks=all and wait for its acknowledgement."""
        self.put_many([(key, value)])

    def put_many(self, marks: list[tuple[str, dict[str, Any]]]) -> None:
        """Write marks with acks=all; return once every one is acknowledged."""
        self.ensure()
        for key, value in marks:
            self.sender.send(self.topic, Record(json.dumps(value).encode(), [], key.encode()))
        self.sender.settle()

    def load(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        """Every mark whose key starts with ``prefix`` (the last value per key), read through
        a sentinel written just before."""
        sentinel = _SENTINEL + uuid.uuid4().hex
        self.put(sentinel, {})
        reader = kafkaops.reader(self.bootstrap)
        reader.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        found: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + kafkaops.STALL_S
        try:
            while time.monotonic() < deadline:
                for msg in reader.consume(1000, 0.2):
                    if msg.error() is not None:
                        continue
                    raw = msg.key()
                    key = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
                    if key == sentinel:
                        return found
                    if key.startswith(prefix) and not key.startswith(_SENTINEL):
                        found[key] = json.loads(msg.value() or b"{}")
        finally:
            reader.close()
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"{self.topic} not read back"))
