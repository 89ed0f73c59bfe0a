"""Dedupe marks (``dedupe_s``) on Kafka: one topic per service, read by every instance.

A mark is a record of ``synapse.dedupe.<service>`` (one partition; compacted, and
deleted after ``RETENTION_MS`` where the broker honours it) keyed by the event's
dedupe key, valued ``{"ttl_ms": n}``: the event counts as handled until the record's
timestamp plus ``ttl_ms``. A mark is produced with ``acks=all`` and acknowledged
before its record's offset is committed and before the lane takes another entry.

Every instance keeps the marks in memory (``Marks``, swept of expired ones): on the
first dedupe decision it reads the whole topic up to a sentinel produced just
before (end offsets cannot be trusted on tansu), so a restarted instance knows
every mark written before it started; after that, each decision first takes what
the consumer has fetched since (other instances' marks, typically within
librdkafka's fetch wait). So: a copy of an event handled (and marked) earlier, by
any instance, is skipped; two copies handled at the same moment on two instances
can both run; a process killed between a handler's return and its mark's
acknowledgement handles that event again (at most ``concurrency`` events).
Blocking calls: run them in a worker thread.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from synapse.backends import kafkaadmin as admin
from synapse.backends import kafkatable
from synapse.backends.kafkaconfig import client_config
from synapse.backends.kafkaproduce import Refusals, produce, produce_one, settle
from synapse.kafka.records import Record

#: The marks topic of a service is this prefix and the service name.
MARKS_PREFIX = "synapse.dedupe."
#: How long a broker keeps a mark when Synapse creates the topic (a day): a longer
#: ``dedupe_s`` needs the topic's ``retention.ms`` raised by hand.
RETENTION_MS = 86_400_000
#: How long reading the marks back or writing one may take.
TIMEOUT_S = 30.0
#: Marks kept before the expired ones are swept (a sweep is one pass over the dict).
SWEEP_AT = 10_000
#: Sentinel keys (``kafkatable``): never a mark.
SENTINEL = kafkatable.SENTINEL.encode()


def marks_topic(service: str) -> str:
    return MARKS_PREFIX + service


class Marks:
    """Dedupe marks in memory: key -> until (wall-clock milliseconds)."""

    def __init__(self) -> None:
        self._until: dict[str, int] = {}
        self._sweep_at = SWEEP_AT

    def marked(self, keys: Sequence[str], now_ms: int | None = None) -> list[bool]:
        now = _now_ms() if now_ms is None else now_ms
        return [self._until.get(k, 0) > now for k in keys]

    def note(self, key: str, until_ms: int) -> None:
        if until_ms > self._until.get(key, 0):
            self._until[key] = until_ms
        if len(self._until) >= self._sweep_at:
            now = _now_ms()
            self._until = {k: t for k, t in self._until.items() if t > now}
            self._sweep_at = max(SWEEP_AT, 2 * len(self._until))


class MarkLog:
    """One service's marks topic: written here, read back into ``marks``."""

    def __init__(self, bootstrap: str, producer: Producer, service: str) -> None:
        self.bootstrap = bootstrap
        self.producer = producer
        self.topic = marks_topic(service)
        self.marks = Marks()
        self._reader: Consumer | None = None
        self._lock = threading.Lock()  # the reader is not thread-safe; one load only

    def marked(self, keys: Sequence[str]) -> list[bool]:
        """Which keys are marked now (the topic read in full the first time, then what
        has arrived since)."""
        with self._lock:
            if self._reader is None:
                self._load()
            else:
                self._take(self._reader.consume(10_000, 0))
            return self.marks.marked(keys)

    def write(self, marks: Sequence[tuple[str, int]]) -> None:
        """Produce each (key, ttl_ms) with acks=all and wait for every acknowledgement."""
        with self._lock:
            if self._reader is None:
                self._load()
        refusals = Refusals()
        for key, ttl_ms in marks:
            value = json.dumps({"ttl_ms": ttl_ms}).encode()
            produce(self.producer, self.topic, Record(value, [], key.encode()), refusals)
        settle(self.producer, refusals.errors, TIMEOUT_S)
        now = _now_ms()
        with self._lock:
            for key, ttl_ms in marks:
                self.marks.note(key, now + ttl_ms)

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def _load(self) -> None:
        admin.ensure_topics(
            self.bootstrap,
            [self.topic],
            partitions=1,
            config={"cleanup.policy": "compact,delete", "retention.ms": str(RETENTION_MS)},
        )
        sentinel = kafkatable.new_sentinel()
        produce_one(self.producer, self.topic, sentinel, None, TIMEOUT_S, "marks sentinel")
        reader = Consumer(client_config(self.bootstrap, {"group.id": "synapse-marks-reader"}))
        reader.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if self._take(reader.consume(1000, 0.2), sentinel):
                    self._reader = reader
                    return
        except BaseException:
            reader.close()
            raise
        reader.close()
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "dedupe marks not read back"))

    def _take(self, messages: list[Message], sentinel: bytes = b"") -> bool:
        """Note the marks among ``messages``; whether ``sentinel`` was among them."""
        seen = False
        for msg in messages:
            key, value = msg.key(), msg.value()
            if msg.error() is not None or not isinstance(key, bytes):
                continue
            if key.startswith(SENTINEL):
                seen = seen or key == sentinel
                continue
            try:
                ttl_ms = int(json.loads(value or b"{}")["ttl_ms"])
            except (ValueError, KeyError, TypeError):
                continue
            self.marks.note(key.decode("utf-8", "replace"), msg.timestamp()[1] + ttl_ms)
        return seen


def _now_ms() -> int:
    return int(time.time() * 1000)
