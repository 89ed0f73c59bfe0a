"""The ``client`` phase: ``synapse.client`` against what a service would write by hand.

All in one process on the bench's server, the same uvloop for every variant:

- subscribe: a no-op handler on a preloaded stream, until the group has acknowledged
  every entry. ``Bus.subscribe`` vs a hand-written redis-py XREADGROUP (500) loop that
  decodes each entry's type and JSON, calls the handler and XACKs the batch, vs
  FastStream's stream subscriber in per-message mode (its logger off).
- publish: ``publish_many`` in chunks of 500 vs a redis-py pipeline of XADDs of the
  same entries, their fields built before the clock starts (the baseline pays no
  envelope, id or JSON cost).
- memory: the subscriber's process RSS over many events, after a warm-up chunk.

Variants are interleaved and repeated; each figure is the median of its runs.
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import psutil
import redis
import redis.asyncio as aioredis

from bench.worker import loop_factory
from bench.workload import events
from synapse import log
from synapse.client import Bus, Event

STREAM = "client-bench"
CHUNK = 500

Handler = Callable[..., Awaitable[None]]


def _published(count: int) -> list[list[bytes]]:
    """``count`` entries as ``publish`` writes them (the bench workload's bodies)."""
    out = []
    for n, fields in enumerate(events(count)):
        out.append(
            [
                *fields[:4],
                b"id", f"{n:032x}".encode(), b"source", b"bench",
                b"time", b"2026-01-01T00:00:00.000Z", b"specversion", b"1.0",
            ]
        )  # fmt: skip
    return out


def _preload(r: redis.Redis, count: int) -> None:
    r.delete(STREAM)
    pipe = r.pipeline(transaction=False)
    for fields in _published(count):
        pipe.execute_command("XADD", STREAM, "*", *fields)  # type: ignore[no-untyped-call]
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()


async def _until(count: list[int], total: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while count[0] < total:
        if time.monotonic() > deadline:
            raise RuntimeError(f"handled {count[0]} of {total} within {timeout_s}s")
        await asyncio.sleep(0.002)


async def _settled(r: aioredis.Redis, group: str) -> None:
    while True:
        info = next(g for g in await r.xinfo_groups(STREAM) if g["name"] == group.encode())
        if info["pending"] == 0 and (info["lag"] or 0) == 0:
            return
        await asyncio.sleep(0.002)


async def synapse_subscriber(url: str, group: str, total: int) -> float:
    count = [0]
    bus = Bus(group, url=url, register=False, batch=CHUNK, block_ms=200)

    @bus.subscribe(STREAM, start="earliest", concurrency=64)
    async def handle(event: Event) -> None:
        count[0] += 1

    r = aioredis.Redis.from_url(url)
    started = time.perf_counter()
    task = asyncio.create_task(bus.run())
    await _until(count, total, 300)
    await _settled(r, group)
    elapsed = time.perf_counter() - started
    bus.stop()
    await task
    await r.aclose()
    return elapsed


async def handwritten_subscriber(url: str, group: str, total: int) -> float:
    """The loop a service writes by hand: read, decode, handle, ack the batch."""
    count = [0]

    async def handle(event_type: str, body: Any) -> None:
        count[0] += 1

    r = aioredis.Redis.from_url(url)
    await r.xgroup_create(STREAM, group, "0")
    started = time.perf_counter()
    while count[0] < total:
        reply: Any = await r.xreadgroup(group, "c1", {STREAM: ">"}, count=CHUNK, block=200)
        for stream, entries in reply:
            ids = []
            for entry_id, fields in entries:
                await handle(fields[b"type"].decode(), orjson.loads(fields[b"data"]))
                ids.append(entry_id)
            await r.xack(stream, group, *ids)
    await _settled(r, group)
    elapsed = time.perf_counter() - started
    await r.aclose()
    return elapsed


async def faststream_subscriber(url: str, group: str, total: int) -> float:
    from faststream.redis import RedisBroker, StreamSub

    count = [0]
    broker = RedisBroker(url, logger=None)  # type: ignore[arg-type]  # None: no logging
    sub = StreamSub(STREAM, group=group, consumer="c1", max_records=CHUNK, polling_interval=200)

    @broker.subscriber(stream=sub)
    async def handle(body: dict[str, Any]) -> None:
        count[0] += 1

    r = aioredis.Redis.from_url(url)
    await r.xgroup_create(STREAM, group, "0")
    started = time.perf_counter()
    await broker.start()
    await _until(count, total, 600)
    await _settled(r, group)
    elapsed = time.perf_counter() - started
    await broker.stop()
    await r.aclose()
    return elapsed


async def publish_many(url: str, items: list[tuple[str, dict[str, Any]]]) -> float:
    bus = Bus("bench", url=url, register=False)
    await bus.publish_many(items[:10], stream=STREAM)  # connected, warmed
    started = time.perf_counter()
    for i in range(0, len(items), CHUNK):
        await bus.publish_many(items[i : i + CHUNK], stream=STREAM)
    elapsed = time.perf_counter() - started
    await bus.close()
    return elapsed


async def raw_pipeline(url: str, entries: list[list[bytes]]) -> float:
    r = aioredis.Redis.from_url(url)
    await r.ping()
    started = time.perf_counter()
    for i in range(0, len(entries), CHUNK):
        pipe = r.pipeline(transaction=False)
        for fields in entries[i : i + CHUNK]:
            pipe.xadd(STREAM, dict(zip(fields[::2], fields[1::2], strict=True)))
        await pipe.execute()
    elapsed = time.perf_counter() - started
    await r.aclose()
    return elapsed


def memory_in_child(url: str, total: int, chunk: int) -> dict[str, float]:
    """``memory`` in a fresh process (``python -m bench.clientbench``): its RSS alone."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.clientbench", url, str(total), str(chunk)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    found: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


async def memory(url: str, total: int, chunk: int, r: redis.Redis) -> dict[str, float]:
    """RSS of this process while its subscriber handles ``total`` events, chunk by chunk."""
    count = [0]
    bus = Bus("bench-memory", url=url, register=False, batch=CHUNK, block_ms=100)

    @bus.subscribe(STREAM, start="earliest", concurrency=64)
    async def handle(event: Event) -> None:
        count[0] += 1

    r.delete(STREAM)
    proc = psutil.Process()
    task = asyncio.create_task(bus.run())
    samples: list[float] = []
    body = _published(1000)  # reused: the producer's memory stays small and constant

    def produce(n: int) -> None:
        for start in range(0, n, len(body)):
            pipe = r.pipeline(transaction=False)
            for fields in body[: n - start]:
                pipe.execute_command(  # type: ignore[no-untyped-call]
                    "XADD", STREAM, "MAXLEN", "~", 100_000, "*", *fields
                )
            pipe.execute()

    sent = 0
    while sent < total:
        await asyncio.to_thread(produce, chunk)
        sent += chunk
        await _until(count, sent, 300)
        gc.collect()
        samples.append(proc.memory_info().rss / 1e6)
    bus.stop()
    await task
    warm = samples[min(1, len(samples) - 1)]
    return {
        "events": float(sent),
        "rss_mb_warm": warm,
        "rss_mb_end": samples[-1],
        "rss_mb_max": max(samples),
        "growth_mb": samples[-1] - warm,
    }


def run(url: str, events_n: int, reps: int, memory_events: int) -> dict[str, Any]:
    """Every client measurement, interleaved and repeated; medians and ratios."""
    log.configure("json", "warning")
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_run(url, events_n, reps, memory_events))


async def _run(url: str, events_n: int, reps: int, memory_events: int) -> dict[str, Any]:
    r = redis.Redis.from_url(url)
    times: dict[str, list[float]] = {
        k: [] for k in ("synapse", "handwritten", "faststream", "publish_many", "raw_pipeline")
    }
    try:
        _preload(r, events_n)
        kinds: list[tuple[str, Callable[[str, str, int], Awaitable[float]]]] = [
            ("synapse", synapse_subscriber),
            ("handwritten", handwritten_subscriber),
            ("faststream", faststream_subscriber),
        ]
        for rep in range(reps):
            for name, measure in kinds if rep % 2 == 0 else kinds[::-1]:
                times[name].append(await measure(url, f"{name}-{rep}", events_n))
        entries = _published(events_n)
        items = [(f[1].decode(), orjson.loads(f[3])) for f in entries]  # the same types and bodies
        for rep in range(reps):
            pair: list[tuple[str, Callable[[], Awaitable[float]]]] = [
                ("publish_many", lambda: publish_many(url, items)),
                ("raw_pipeline", lambda: raw_pipeline(url, entries)),
            ]
            for name, run_one in pair if rep % 2 == 0 else pair[::-1]:
                r.delete(STREAM)
                times[name].append(await run_one())
        rates = {k: events_n / statistics.median(v) for k, v in times.items()}
        result: dict[str, Any] = {"events": events_n, "reps": reps, "events_per_s": rates}
        result["seconds"] = times  # every run, for the spread
        result["ratios"] = {
            "subscribe_vs_handwritten": rates["synapse"] / rates["handwritten"],
            "subscribe_vs_faststream": rates["synapse"] / rates["faststream"],
            "publish_many_vs_raw_pipeline": rates["publish_many"] / rates["raw_pipeline"],
        }
        chunk = max(500, memory_events // 20)
        result["memory"] = await asyncio.to_thread(memory_in_child, url, memory_events, chunk)
        return result
    finally:
        r.delete(STREAM)
        r.close()


def report(result: dict[str, Any]) -> list[str]:
    """The client phase's lines of the bench table."""
    rates, ratios, mem = result["events_per_s"], result["ratios"], result["memory"]
    return [
        f"client phase: {result['events']:,} events x {result['reps']} runs (medians)",
        "| variant | events/s |",
        "|---|---:|",
        f"| Bus.subscribe, no-op handler | {rates['synapse']:,.0f} |",
        f"| hand-written XREADGROUP/XACK loop | {rates['handwritten']:,.0f} |",
        f"| FastStream stream subscriber (per message) | {rates['faststream']:,.0f} |",
        f"| Bus.publish_many (chunks of {CHUNK}) | {rates['publish_many']:,.0f} |",
        f"| redis-py pipelined XADD (same entries) | {rates['raw_pipeline']:,.0f} |",
        f"subscribe / hand-written: {ratios['subscribe_vs_handwritten']:.2f}; "
        f"subscribe / FastStream: {ratios['subscribe_vs_faststream']:.1f}; "
        f"publish_many / pipelined XADD: {ratios['publish_many_vs_raw_pipeline']:.2f}",
        f"subscriber RSS: {mem['rss_mb_warm']:.1f} MB warm, {mem['rss_mb_end']:.1f} MB after "
        f"{mem['events']:,.0f} events (growth {mem['growth_mb']:+.1f} MB)",
    ]


if __name__ == "__main__":
    log.configure("json", "warning")
    _url, _total, _chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    _client = redis.Redis.from_url(_url)
    with asyncio.Runner(loop_factory=loop_factory()) as _runner:
        print(json.dumps(_runner.run(memory(_url, _total, _chunk, _client))))
