"""``synapse.client.Bus`` on Kafka against hand-written confluent-kafka code, one run, on tansu.

Publish: ``Bus.publish_many`` in chunks of 500 (envelope, ids, JSON built per event,
every acknowledgement awaited) against a hand-written ``Producer.produce`` of the
same records (headers and values built before the clock) and one ``flush`` per
chunk. Subscribe: ``Bus.subscribe`` with a no-op async handler (concurrency 64,
batch 500) against a hand-written loop on the same client (``consume`` 500 from a
fresh group, JSON-decode each value and read its headers, call the handler,
commit the batch's offsets synchronously). Each subscriber drains the same
preloaded topic with a fresh group; runs interleaved; medians; CPU is this
process's (every thread) per event. Prints events/s and the ratios.

    .venv/bin/python -m bench.kafkabus [--events 20000] [--reps 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer

from bench.proc import cpu_s
from synapse.backends import kafkaadmin as admin
from synapse.client import Bus, Event, envelope
from synapse.tansu import TansuBroker

TOPIC = "bench.bus"
PARTITIONS = 3
CHUNK = 500


def bodies(count: int) -> list[dict[str, Any]]:
    return [
        {"model_id": f"m{n}", "stage": "production", "metrics": {"accuracy": 0.9}}
        for n in range(count)
    ]


async def publish_bus(url: str, topic: str, count: int) -> float:
    async with Bus("bench-publisher", url=url, register=False) as bus:
        items = [("model.ready", b) for b in bodies(count)]
        await bus.publish("warm.up", {}, stream=topic)  # connections and topic metadata
        start = time.perf_counter()
        for at in range(0, count, CHUNK):
            await bus.publish_many(items[at : at + CHUNK], stream=topic)
        return time.perf_counter() - start


def publish_hand(bootstrap: str, topic: str, count: int) -> float:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2,
                         "enable.idempotence": False})  # fmt: skip
    records = [
        (orjson.dumps(b), [("type", b"model.ready"), ("id", envelope.new_id().encode()),
                           ("source", b"bench"), ("time", envelope.rfc3339_now().encode()),
                           ("specversion", b"1.0")])
        for b in bodies(count)
    ]  # fmt: skip
    producer.produce(topic, value=b"{}", headers=[("type", b"warm.up")])
    assert producer.flush(30) == 0  # connections and topic metadata
    start = time.perf_counter()
    for at in range(0, count, CHUNK):
        for value, headers in records[at : at + CHUNK]:
            producer.produce(topic, value=value, headers=headers)  # type: ignore[arg-type]
        assert producer.flush(30) == 0
    return time.perf_counter() - start


async def drain_bus(url: str, topic: str, service: str, count: int) -> float:
    bus = Bus(service, url=url, register=False, block_ms=200, batch=CHUNK)
    seen = 0
    done = asyncio.Event()
    start = 0.0

    @bus.subscribe(topic, concurrency=64, start="earliest")
    async def handle(event: Event) -> None:
        nonlocal seen, start
        if not seen:
            start = time.perf_counter()  # the clock starts at the first event (after the join)
        seen += 1
        if seen >= count:
            done.set()

    task = asyncio.create_task(bus.run())
    await asyncio.wait_for(done.wait(), 600)
    elapsed = time.perf_counter() - start
    bus.stop()
    await task
    return elapsed


async def drain_hand(bootstrap: str, topic: str, group: str, count: int) -> float:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})  # fmt: skip
    consumer.subscribe([topic])
    seen = 0

    async def handler(event: dict[str, Any]) -> None:
        return None

    start = 0.0
    try:
        while seen < count:
            batch = await asyncio.to_thread(consumer.consume, CHUNK, 0.2)
            if batch and not start:
                start = time.perf_counter()  # the clock starts at the first batch (after the join)
            for msg in batch:
                if msg.error() is not None:
                    continue
                headers = dict(msg.headers() or [])
                await handler(
                    {"type": headers.get("type"), "data": orjson.loads(msg.value() or b"{}")}
                )
                seen += 1
            if batch:
                await asyncio.to_thread(consumer.commit, asynchronous=False)
        return time.perf_counter() - start
    finally:
        consumer.close()


async def run(events: int, reps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, TansuBroker(log_dir=Path(tmp)) as broker:
        await asyncio.to_thread(
            admin.ensure_topics, broker.bootstrap, [TOPIC, f"{TOPIC}.p"], partitions=PARTITIONS
        )
        me = os.getpid()
        times: dict[str, list[float]] = {
            k: [] for k in ("pub_bus", "pub_hand", "sub_bus", "sub_hand")
        }
        cpus: dict[str, list[float]] = {k: [] for k in times}
        await publish_bus(broker.url, TOPIC, events)  # the subscribers' preload
        for rep in range(reps):
            for name in ("pub_bus", "pub_hand", "sub_bus", "sub_hand"):
                cpu0 = cpu_s(me)
                if name == "pub_bus":
                    t = await publish_bus(broker.url, f"{TOPIC}.p", events)
                elif name == "pub_hand":
                    t = await asyncio.to_thread(
                        publish_hand, broker.bootstrap, f"{TOPIC}.p", events
                    )
                elif name == "sub_bus":
                    t = await drain_bus(broker.url, TOPIC, f"bench-bus-{rep}", events)
                else:
                    t = await drain_hand(broker.bootstrap, TOPIC, f"bench-hand-{rep}", events)
                times[name].append(t)
                cpus[name].append(cpu_s(me) - cpu0)
        rate = {k: events / statistics.median(v) for k, v in times.items()}
        labels = {
            "pub_bus": "Bus.publish_many (500 per call)",
            "pub_hand": "hand-written produce + flush per 500",
            "sub_bus": "Bus.subscribe, no-op handler",
            "sub_hand": "hand-written consume/decode/handler/commit",
        }
        for name, label in labels.items():
            cpu_us = statistics.median(cpus[name]) / events * 1e6
            print(f"{label:45s} {rate[name]:>10,.0f} events/s  {cpu_us:6.1f} us CPU/event")
        print(f"publish ratio   (Bus / hand): {rate['pub_bus'] / rate['pub_hand']:.2f}")
        print(f"subscribe ratio (Bus / hand): {rate['sub_bus'] / rate['sub_hand']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(run(args.events, args.reps))


if __name__ == "__main__":
    main()
