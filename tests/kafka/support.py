"""Helpers of the Kafka tests: produce records, read a topic back by consuming it (never by
end offsets: tansu's under-report, docs/kafka.md), load a table for Kafka."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from synapse.config import RoutingTable, load_table
from tests.conftest import write_table


class Got(NamedTuple):
    """One record read back: its key, headers (as a dict, last wins) and value."""

    key: bytes | None
    headers: dict[str, bytes]
    value: bytes | None


def kafka_table(
    folder: Path, yaml_text: str, schemas: dict[str, Any] | None = None
) -> RoutingTable:
    """A table compiled for Kafka (topic-name rules, synapse.dlq by default)."""
    return load_table(write_table(folder, yaml_text, schemas), kind="kafka")


def produce(
    bootstrap: str,
    topic: str,
    values: list[bytes],
    *,
    headers: list[tuple[str, bytes]] | None = None,
    key: bytes | None = None,
    partition: int | None = None,
    batched: bool = True,
) -> list[bytes]:
    """Produce ``values`` with acks=all; their entry ids (``<partition>-<offset>``).
    ``batched=False``: one record per produce request (tansu's high watermark under-reports
    after batched produce, and a consumer starting past it fetches nothing: docs/kafka.md)."""
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5}
    if not batched:
        config.update({"linger.ms": 0, "batch.num.messages": 1, "max.in.flight": 1})
    producer = Producer(config)
    ids: list[bytes] = []

    def done(err: Any, msg: Any) -> None:
        assert err is None, err
        ids.append(b"%d-%d" % (msg.partition(), msg.offset()))

    extra = {} if partition is None else {"partition": partition}
    for value in values:
        while True:
            try:
                producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=done, **extra
                )
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(30) == 0
    return ids


def read_back(
    bootstrap: str,
    topic: str,
    n: int,
    timeout_s: float = 30.0,
    done: Callable[[list[Got]], bool] | None = None,
) -> list[Got]:
    """At least n records of ``topic`` (all partitions from the start, no group), or what
    came within ``timeout_s``, until ``done`` says so too; then whatever else arrives
    before a fetch comes back empty."""
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused"})
    meta = reader.list_topics(topic, timeout=10).topics[topic]
    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
    got: list[Got] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            batch = reader.consume(1000, 0.5)
            got += [
                Got(m.key(), dict(m.headers() or []), m.value())  # type: ignore[arg-type]
                for m in batch
                if m.error() is None
            ]
            if len(got) >= n and not batch and (done is None or done(got)):
                break
    finally:
        reader.close()
    return got
