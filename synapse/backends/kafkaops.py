"""Blocking Kafka calls for the ``synapse`` commands (never the router's hot path).

Partitions and the broker's offsets (``watermarks``), every consumer group's committed
offsets on a topic, reading a topic's partitions from given offsets to the end as it is
now, producing one record with ``acks=all``. Readers never join a group and never
commit: ``assign`` with a group id no one commits under.

"The end" is where each partition reports end-of-partition to the reader, not the
broker's end offsets: tansu under-reports those after batched produce (docs/kafka.md),
so anything that must be exact counts by reading.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from synapse.backends.kafkaconfig import client_config
from synapse.backends.kafkaproduce import produce, settle
from synapse.kafka.records import Record

#: How long one broker request may take.
TIMEOUT_S = 10.0
#: How long a read may go without any record or end-of-partition before it is an error.
STALL_S = 30.0
#: The group id readers give (required by the client); they never join it or commit.
READER_GROUP = "synapse-cli-reader"

#: {partition: offset}
Offsets = dict[int, int]


#: librdkafka logs nothing on stderr (a command prints one line per error; the error it
#: fails with names the problem): emergencies only.
QUIET = {"log_level": 0}


def admin_client(bootstrap: str) -> AdminClient:
    return AdminClient(
        client_config(bootstrap, {"socket.timeout.ms": int(TIMEOUT_S * 1000), **QUIET})
    )


#: Errors that mean "no record at that offset" to a reader (``auto.offset.reset=error``).
OUT_OF_RANGE = (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE)


def reader(bootstrap: str, *, reset: str = "error") -> Consumer:
    """A consumer that reads by ``assign`` only, reporting end-of-partition, and an offset
    out of range as an error (``OUT_OF_RANGE``: never a silent jump to another offset)."""
    return Consumer(
        client_config(
            bootstrap,
            {
                "group.id": READER_GROUP,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": reset,
                **QUIET,
            },
        )
    )


def producer(bootstrap: str) -> Producer:
    return Producer(
        client_config(
            bootstrap,
            {
                "acks": "all",
                "enable.idempotence": False,  # tansu has no InitProducerId (docs/kafka.md)
                "linger.ms": 5,
                "message.timeout.ms": int(TIMEOUT_S * 3000),
                **QUIET,
            },
        )
    )


def topics(admin: AdminClient) -> dict[str, int]:
    """Every topic the broker lists (internal ones, ``__*``, left out) -> its partition count.
    Listing all topics never creates one (a metadata request naming a topic might)."""
    meta = admin.list_topics(timeout=TIMEOUT_S)
    return {name: len(t.partitions) for name, t in meta.topics.items() if not name.startswith("__")}


def watermarks(
    consumer: Consumer, topic: str, partitions: Iterable[int], timeout_s: float = TIMEOUT_S
) -> dict[int, tuple[int, int]]:
    """{partition: (first offset, end offset)} as the broker reports them now (asked of
    the broker, never the client's cache)."""
    out = {}
    for p in partitions:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, p), timeout=timeout_s, cached=False
        )
        out[p] = (int(low), int(high))
    return out


def offsets_for_time(consumer: Consumer, topic: str, ends: Offsets, ms: int) -> Offsets:
    """Per partition, the broker's first offset whose timestamp is at or after ``ms``
    (the partition's end when none). tansu answers 0 whatever the time (docs/kafka.md):
    callers also skip records older than ``ms`` as they read."""
    asked = [TopicPartition(topic, p, ms) for p in ends]
    found = consumer.offsets_for_times(asked, timeout=TIMEOUT_S)
    return {tp.partition: (ends[tp.partition] if tp.offset < 0 else tp.offset) for tp in found}


#: {group: {topic: {partition: committed offset}}}
Committed = dict[str, dict[str, Offsets]]


def group_offsets(admin: AdminClient) -> Committed:
    """Every consumer group (its id a key, even with no commit) and its committed offsets
    on every topic (one request per group)."""
    listed = admin.list_consumer_groups(request_timeout=TIMEOUT_S).result()
    out: Committed = {}
    for group in sorted(g.group_id for g in listed.valid):
        out[group] = {}
        asked = [ConsumerGroupTopicPartitions(group)]
        futures = admin.list_consumer_group_offsets(asked, request_timeout=TIMEOUT_S)
        for future in futures.values():
            for tp in future.result().topic_partitions or []:
                if tp.offset >= 0:
                    out.setdefault(group, {}).setdefault(tp.topic, {})[tp.partition] = tp.offset
    return out


def group_members(admin: AdminClient, groups: list[str]) -> dict[str, list[dict[str, Any]]]:
    """{group: [{name, host, assigned: [(topic, partition)...]}]}: each group's live members
    (none for a group with no member now, or one the broker cannot describe)."""
    if not groups:
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    for group, future in admin.describe_consumer_groups(groups, request_timeout=TIMEOUT_S).items():
        try:
            described = future.result()
        except KafkaException:
            out[group] = []
            continue
        out[group] = [
            {
                "name": m.client_id or m.member_id,
                "host": m.host,
                "assigned": [
                    (tp.topic, tp.partition)
                    for tp in (m.assignment.topic_partitions if m.assignment else [])
                ],
            }
            for m in described.members
        ]
    return out


def read(
    consumer: Consumer, topic: str, starts: Offsets, ends: Offsets | None = None
) -> Iterator[Message]:
    """Every record of ``topic`` from ``starts`` ({partition: offset}) to the end as it is
    now, or to ``ends`` (exclusive) for the partitions it names: a partition is done when
    the reader reports end-of-partition for it, or reaches its end in ``ends``."""
    ends = ends or {}
    todo = {p for p, o in starts.items() if p not in ends or o < ends[p]}
    if not todo:
        return
    consumer.assign([TopicPartition(topic, p, starts[p]) for p in sorted(todo)])
    ended: set[int] = set()
    heard = time.monotonic()
    try:
        while ended < todo:
            batch = consumer.consume(500, 0.2)
            if batch:
                heard = time.monotonic()
            elif time.monotonic() - heard > STALL_S:
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"reading {topic} stalled"))
            for msg in batch:
                err, partition = msg.error(), msg.partition() or 0
                if err is not None and err.code() in (KafkaError._PARTITION_EOF, *OUT_OF_RANGE):
                    ended.add(partition)
                elif err is not None:
                    raise KafkaException(err)
                elif partition in ended and partition in ends:
                    continue  # past its end: read in the same fetch
                else:
                    offset = msg.offset() or 0
                    if partition in ends and offset + 1 >= ends[partition]:
                        ended.add(partition)
                        if offset >= ends[partition]:
                            continue
                    else:
                        ended.discard(partition)
                    yield msg
    finally:
        consumer.unassign()


class Sender:
    """A producer with ``acks=all`` whose sends are waited for together (``settle``)."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = producer(bootstrap)
        self.errors: list[KafkaError] = []

    def send(self, topic: str, record: Record, done: list[tuple[int, int]] | None = None) -> None:
        """Produce one record without waiting; its (partition, offset) is appended to
        ``done`` once acknowledged."""

        def acknowledged(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                self.errors.append(err)
            elif done is not None:
                done.append((msg.partition() or 0, msg.offset() or 0))

        produce(self.producer, topic, record, acknowledged)

    def settle(self) -> None:
        """Wait until every record sent is acknowledged; the first refusal as a KafkaException."""
        try:
            settle(self.producer, self.errors, TIMEOUT_S * 3)
        finally:
            self.errors = []

    def produce(self, topic: str, record: Record) -> tuple[int, int]:
        """Produce one record and wait for it: its (partition, offset)."""
        done: list[tuple[int, int]] = []
        self.send(topic, record, done)
        self.settle()
        return done[0]
