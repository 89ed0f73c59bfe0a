"""Consumer groups and topic sizes on Kafka, for ``synapse services`` and ``synapse topology``.

Blocking reads (confluent-kafka): a topic's records are the sum over its partitions
of high minus low watermark; a group's lag on a topic is the sum of high watermark
minus its committed offset (the low watermark where it has none). A group is
"on" a topic when it has a committed offset on one of its partitions. Asking a
group's committed offsets does not join it. On tansu the high watermark
under-reports after batched produce (docs/kafka.md), so both numbers can be low
there; on Apache Kafka or Redpanda they are exact. Kafka has no pending list: a
group's ``pending`` is None.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, TopicPartition

#: How long one metadata, watermark or offsets request may take.
TIMEOUT_S = 10.0


class Groups:
    """Reads watermarks and committed offsets; ``close`` when done."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._plain = self._consumer("synapse-cli-reader")
        self._by_group: dict[str, Consumer] = {}
        self._marks: dict[str, list[tuple[int, int, int]]] = {}

    def _consumer(self, group: str) -> Consumer:
        return Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": group, "enable.auto.commit": False}
        )

    def topics(self) -> set[str]:
        meta = self._plain.list_topics(timeout=TIMEOUT_S)
        return {name for name in meta.topics if not name.startswith("__")}

    def watermarks(self, topic: str) -> list[tuple[int, int, int]]:
        """(partition, low, high) of each partition of ``topic``; [] when it does not exist."""
        found = self._marks.get(topic)
        if found is None:
            meta = self._plain.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
            found = []
            if meta is not None and meta.error is None:
                for p in sorted(meta.partitions):
                    low, high = self._plain.get_watermark_offsets(
                        TopicPartition(topic, p), timeout=TIMEOUT_S
                    )
                    found.append((p, low, high))
            self._marks[topic] = found
        return found

    def length(self, topic: str) -> int | None:
        """Records held by ``topic`` (None when it does not exist)."""
        marks = self.watermarks(topic)
        return sum(high - low for _, low, high in marks) if marks else None

    def on_topic(self, group: str, topic: str) -> dict[str, Any] | None:
        """``group``'s lag on ``topic`` as ``{"name", "consumers", "pending", "lag"}``, or
        None when the group has committed nothing there."""
        marks = self.watermarks(topic)
        if not marks:
            return None
        reader = self._by_group.get(group)
        if reader is None:
            reader = self._by_group[group] = self._consumer(group)
        committed = reader.committed(
            [TopicPartition(topic, p) for p, _, _ in marks], timeout=TIMEOUT_S
        )
        at = {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
        if not at:
            return None
        lag = sum(max(0, high - at.get(p, low)) for p, low, high in marks)
        return {"name": group, "consumers": [], "pending": None, "lag": lag}

    def close(self) -> None:
        for reader in [self._plain, *self._by_group.values()]:
            reader.close()
