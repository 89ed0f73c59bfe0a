"""Helpers of the Kafka tests: produce records, read a topic back by consuming it (never by
end offsets: tansu's under-report, docs/kafka.md), load a table for Kafka."""

from __future__ import annotations

import contextlib
import threading
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
    ``batched=False``: one record per produce request, for tests that read end offsets
    (tansu's ListOffsets under-reports after batched produce: docs/kafka.md)."""
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5}
    if not batched:
        config.update({"linger.ms": 0, "batch.num.messages": 1, "max.in.flight": 1})
    producer = Producer(config)
    ids: list[bytes] = []

    def done(err: Any, msg: Any) -> None:
        assert err is None, err
        ids.append(b"%d-%d" % (msg.partition(), msg.offset()))

    extra = {} if partition is None else {"partition": partition}
    try:
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
    finally:
        producer.close()
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


class Feeder:
    """Produces records to ``topic`` on a thread of its own, ``per_tick`` records every
    ``tick_s``, until ``stop()``: a source that keeps growing, so a router can never drain
    it before the test acts."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        value: Callable[[int], bytes],
        *,
        headers: list[tuple[str, bytes]] | None = None,
        per_tick: int = 50,
        tick_s: float = 0.1,
    ) -> None:
        self.bootstrap, self.topic, self.value, self.headers = bootstrap, topic, value, headers
        self.per_tick, self.tick_s = per_tick, tick_s
        self.ids: list[bytes] = []
        self._stop = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def start(self) -> Feeder:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                n = len(self.ids)
                values = [self.value(n + i) for i in range(self.per_tick)]
                self.ids += produce(self.bootstrap, self.topic, values, headers=self.headers)
                self._stop.wait(self.tick_s)
        except BaseException as exc:  # handed to stop(), on the test's thread
            self._failed = exc

    def stop(self) -> list[bytes]:
        """Stop producing; the entry ids of every record produced (all acknowledged)."""
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), "the feeder did not stop"
        if self._failed is not None:
            raise self._failed
        return self.ids


def rdkafka_threads() -> list[str]:
    """Names of this process's librdkafka threads (``rdk:*``): one set per open client."""
    tasks = Path("/proc/self/task")
    names = []
    for task in tasks.iterdir():
        with contextlib.suppress(OSError):
            names.append((task / "comm").read_text().strip())
    return sorted(n for n in names if n.startswith("rdk:"))
