"""Which Kafka client for the router: aiokafka against confluent-kafka, one run, on tansu.

The router's workload with no routing decision: consume a batch from a consumer
group, produce two copies of each record with ``acks=all``, wait for every
acknowledgement, commit the batch's offsets; repeat until the topic is drained.
Each variant drains the same preloaded topic with a fresh group; runs are
interleaved. Every copy's acknowledgement is checked (tansu's end offsets
under-report, so they cannot count the copies: docs/kafka.md). Prints records/s
and CPU per record (client process and broker) and the ratios against aiokafka
measured in the same run.

    .venv/bin/python -m bench.kafkaclients [--events 20000] [--reps 2]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata
from confluent_kafka import Consumer, Producer

from bench.kafkaloop import copy_batch, on_delivery
from bench.proc import cpu_s
from bench.workload import events
from synapse.tansu import TansuBroker

SOURCE = "bench.in"
COPIES = ("bench.out.a", "bench.out.b")
PARTITIONS = 3
BATCH = 500


async def preload(bootstrap: str, count: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in (SOURCE, *COPIES)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        pending = []
        for n, fields in enumerate(events(count)):
            key = str(n % 64).encode()
            headers = [("type", fields[1])]
            pending.append(await producer.send(SOURCE, fields[3], key=key, headers=headers))
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def drain_aiokafka(bootstrap: str, group: str, count: int) -> float:
    consumer = AIOKafkaConsumer(
        SOURCE,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
    await consumer.start()
    await producer.start()
    done, first = 0, 0.0
    try:
        while done < count:
            got = await consumer.getmany(timeout_ms=1000, max_records=BATCH)
            first = first or (time.perf_counter() if got else 0.0)
            acks = []
            offsets: dict[TopicPartition, OffsetAndMetadata] = {}
            for tp, records in got.items():
                for rec in records:
                    for copy in COPIES:
                        acks.append(
                            await producer.send(
                                copy, rec.value, key=rec.key, headers=list(rec.headers)
                            )
                        )
                    done += 1
                offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "")
            await asyncio.gather(*acks)
            if offsets:
                await consumer.commit(offsets)
    finally:
        await producer.stop()
        await consumer.stop()
    return first


def confluent_consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,  # tansu holds a rejoin for the session timeout
        }
    )


def confluent_producer(bootstrap: str) -> Producer:
    return Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": False, "linger.ms": 1}
    )


def drain_confluent(bootstrap: str, group: str, count: int) -> float:
    """librdkafka's own threads, driven synchronously: the upper bound of this client."""
    consumer, producer = confluent_consumer(bootstrap, group), confluent_producer(bootstrap)
    consumer.subscribe([SOURCE])
    errors: list[str] = []
    delivered = on_delivery(errors)
    done, first = 0, 0.0
    try:
        while done < count:
            got = consumer.consume(BATCH, 1.0)
            first = first or (time.perf_counter() if got else 0.0)
            copied, tps = copy_batch(producer, got, COPIES, delivered)
            done += copied
            if producer.flush(30) != 0 or errors:
                raise RuntimeError(f"copies not acknowledged: {errors[:3]}")
            if tps:
                consumer.commit(offsets=tps, asynchronous=False)
    finally:
        consumer.close()
    return first


async def drain_confluent_asyncio(bootstrap: str, group: str, count: int) -> float:
    """The same client as an asyncio router would drive it: the blocking calls (consume,
    flush, commit) in a worker thread; its AIOProducer cannot send headers, so not that."""
    loop = asyncio.get_running_loop()
    consumer, producer = confluent_consumer(bootstrap, group), confluent_producer(bootstrap)
    consumer.subscribe([SOURCE])
    errors: list[str] = []
    delivered = on_delivery(errors)
    done, first = 0, 0.0
    try:
        while done < count:
            got = await loop.run_in_executor(None, consumer.consume, BATCH, 1.0)
            first = first or (time.perf_counter() if got else 0.0)
            copied, tps = copy_batch(producer, got, COPIES, delivered)
            done += copied
            if await loop.run_in_executor(None, producer.flush, 30) != 0 or errors:
                raise RuntimeError(f"copies not acknowledged: {errors[:3]}")
            if tps:
                commit = functools.partial(consumer.commit, offsets=tps, asynchronous=False)
                await loop.run_in_executor(None, commit)
    finally:
        await loop.run_in_executor(None, consumer.close)
    return first


def measure(run: Callable[[], float], broker_pid: int, count: int) -> dict[str, float]:
    """Records/s from the first batch to the last commit (the group join is not the
    workload: tansu takes seconds to settle one); CPU per record over the whole run."""
    me, broker0 = cpu_s(os.getpid()), cpu_s(broker_pid)
    first = run()
    wall_s = time.perf_counter() - first
    return {
        "records_s": count / wall_s,
        "client_us": (cpu_s(os.getpid()) - me) / count * 1e6,
        "broker_us": (cpu_s(broker_pid) - broker0) / count * 1e6,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench.kafkaclients", description=__doc__)
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--reps", type=int, default=2)
    args = p.parse_args(argv)
    results: dict[str, list[dict[str, float]]] = {
        "aiokafka": [],
        "confluent-kafka": [],
        "confluent+asyncio": [],
    }
    with tempfile.TemporaryDirectory() as tmp, TansuBroker(log_dir=Path(tmp)) as broker:
        assert broker.process is not None
        pid, boot, n = broker.process.pid, broker.bootstrap, args.events
        asyncio.run(preload(boot, n))
        variants: dict[str, Callable[[str], float]] = {
            "aiokafka": lambda g: asyncio.run(drain_aiokafka(boot, g, n)),
            "confluent-kafka": lambda g: drain_confluent(boot, g, n),
            "confluent+asyncio": lambda g: asyncio.run(drain_confluent_asyncio(boot, g, n)),
        }
        for rep in range(args.reps):
            for name, drain in variants.items():
                results[name].append(measure(functools.partial(drain, f"{name}-{rep}"), pid, n))
    base = {k: statistics.median(r[k] for r in results["aiokafka"]) for k in results["aiokafka"][0]}
    print(f"{n} records, {args.reps} interleaved runs each, medians; ratio vs aiokafka")
    print(
        f"{'client':16} {'records/s':>10} {'client us/rec':>14} {'broker us/rec':>14} {'ratio':>6}"
    )
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        ratio = med["records_s"] / base["records_s"]
        print(
            f"{name:16} {med['records_s']:10.0f} {med['client_us']:14.1f}"
            f" {med['broker_us']:14.1f} {ratio:6.2f}"
        )


if __name__ == "__main__":
    main()
