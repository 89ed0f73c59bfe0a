"""The hand-written Kafka loop the ``kafka`` phase measures Synapse's router against.

The router's workload with no decision (issue 14): consume a batch of the source
from the consumer group, produce two copies of each record (value, key and
headers as read) with ``acks=all``, wait for every acknowledgement, commit the
batch's offsets; no parsing, no validation, no table. The same library and the
same client settings as ``synapse/backends/kafka.py``, driven from asyncio the
same way (consume and commit on one thread of their own, the producer's flush in
another), which ``bench/kafkaclients.py`` measured as this client's fastest
shape. Run as a ``bench.worker`` (``kafkaloop URL CONSUMER BATCH``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from bench.workload import GROUP, SOURCE
from synapse.kafka.url import parse

#: The loop's two destination topics.
COPIES = ("loop-1", "loop-2")
#: The longest one consume call blocks (the router's slice, ``kafka.SLICE_S``).
SLICE_S = 0.1


def clients(url: str, consumer: str) -> tuple[Consumer, Producer]:
    """A consumer in the bench's group and an acks=all producer, set as the router sets them."""
    bootstrap = parse(url).bootstrap
    kafka = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": GROUP,
            "client.id": consumer,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": consumer,
            "acks": "all",
            "enable.idempotence": False,  # tansu has no InitProducerId
            "linger.ms": 2,
        }
    )
    return kafka, producer


def on_delivery(errors: list[str]) -> Callable[[KafkaError | None, object], None]:
    """A delivery callback that notes each refused copy in ``errors``."""

    def note(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    return note


def copy_batch(
    producer: Producer,
    got: Sequence[Message],
    copies: Sequence[str],
    delivered: Callable[[KafkaError | None, object], None],
) -> tuple[int, list[TopicPartition]]:
    """Produce a copy of each consumed record (value, key and headers as read) to each of
    ``copies``, without waiting: how many records were copied, and the offsets to commit
    once every copy is acknowledged. End-of-partition events are skipped; another error
    raises."""
    copied = 0
    offsets: dict[tuple[str, int], int] = {}
    for msg in got:
        error = msg.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                continue
            raise KafkaException(error)
        for copy in copies:
            producer.produce(
                copy, msg.value(), key=msg.key(), headers=msg.headers(), on_delivery=delivered
            )
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        offsets[(topic, partition)] = offset + 1
        copied += 1
    return copied, [TopicPartition(t, p, o) for (t, p), o in offsets.items()]


def kafkaloop_worker(url: str, consumer: str, batch: int) -> Callable[[asyncio.Event], Any]:
    async def work(stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        thread = ThreadPoolExecutor(1, thread_name_prefix="kafka-consumer")
        kafka, producer = clients(url, consumer)
        errors: list[str] = []
        delivered = on_delivery(errors)
        await loop.run_in_executor(thread, functools.partial(kafka.subscribe, [SOURCE]))
        while not stop.is_set():
            got = await loop.run_in_executor(thread, kafka.consume, batch, SLICE_S)
            _, tps = copy_batch(producer, got, COPIES, delivered)
            if not tps:
                continue
            if await asyncio.to_thread(producer.flush) != 0 or errors:
                raise RuntimeError(f"copies not acknowledged: {errors[:3]}")
            commit = functools.partial(kafka.commit, offsets=tps, asynchronous=False)
            await loop.run_in_executor(thread, commit)
        await loop.run_in_executor(thread, kafka.close)
        thread.shutdown()

    return work
