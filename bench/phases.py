"""The measurements: drain throughput, latency at a fixed load, memory, scale-out.

Each phase starts from an empty server, runs router processes made by
``bench.worker`` and measures them from outside: wall time until the consumer
group has delivered and acknowledged everything, CPU seconds of the router
processes and of the server (psutil), router RSS. Copies are counted on the
server afterwards, so a fast but wrong router fails the run instead of winning.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hiredis
import redis

from bench.proc import Pinning, Worker, cpu_s, pin
from bench.worker import baseline_streams
from bench.workload import GROUP, SOURCE, TOPICS, TS_FIELD, audit_streams, events, preload
from synapse.embedded import EmbeddedServer


@dataclass
class Bench:
    """The server and the settings every phase shares."""

    server: EmbeddedServer
    config: Path
    fanout: int
    batch: int
    pinning: Pinning

    def __post_init__(self) -> None:
        self.r = redis.Redis.from_url(self.server.url)

    @property
    def server_pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def fresh(self, count: int) -> bytes:
        """Empty server, ``count`` events in the source, the group at its start."""
        self.r.flushall()
        last = preload(self.server.port, count) if count else b"0-0"
        self.r.xgroup_create(SOURCE, GROUP, "0", mkstream=True)
        return last

    def worker(self, kind: str, consumer: str, pinned: bool = True) -> Worker:
        cpus = self.pinning.routers if pinned else None
        if kind == "synapse":
            return Worker(["synapse", self.server.url, consumer, str(self.config)], cpus)
        args = ["baseline", self.server.url, consumer, str(self.fanout), str(self.batch)]
        return Worker(args, cpus)

    def destinations(self, kind: str) -> list[str]:
        if kind == "synapse":
            return [*TOPICS, *audit_streams(self.fanout)]
        return baseline_streams(self.fanout)

    def wait_drained(self, last_id: bytes, timeout_s: float) -> None:
        """Until the group has delivered ``last_id`` and nothing is pending."""
        deadline = time.monotonic() + timeout_s
        while True:
            info = next(g for g in self.r.xinfo_groups(SOURCE) if g["name"] == GROUP.encode())
            if info["last-delivered-id"] == last_id and info["pending"] == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"not drained within {timeout_s}s: {info}")
            time.sleep(0.005)

    def copies(self, kind: str) -> int:
        return sum(int(self.r.xlen(s)) for s in self.destinations(kind))


def drain(b: Bench, kind: str, count: int, routers: int = 1, pinned: bool = True) -> dict[str, Any]:
    """Drain ``count`` preloaded events with ``routers`` processes of ``kind``."""
    last = b.fresh(count)
    pin(b.server_pid, b.pinning.server if pinned else _all_cpus())
    workers = [b.worker(kind, f"{kind}-{i}", pinned) for i in range(routers)]
    try:
        client0 = [w.cpu_s() for w in workers]
        server0 = cpu_s(b.server_pid)
        started = time.perf_counter()
        for w in workers:
            w.go()
        b.wait_drained(last, timeout_s=60 + count / 1000)
        wall = time.perf_counter() - started
        split = [w.cpu_s() - c0 for w, c0 in zip(workers, client0, strict=True)]
        client = sum(split)
        server = cpu_s(b.server_pid) - server0
    finally:
        for w in workers:
            w.stop()
    copies = b.copies(kind)
    if copies != count * b.fanout:
        raise RuntimeError(f"{kind}: {copies} copies, expected {count * b.fanout}")
    return {
        "kind": kind,
        "routers": routers,
        "events": count,
        "seconds": wall,
        "events_per_s": count / wall,
        "client_us_per_event": client / count * 1e6,
        "server_us_per_event": server / count * 1e6,
        "cores_busy": (client + server) / wall,
        "router_cpu_s": split,
    }


#: The CPUs this process may use, read at import (before the driver pins itself).
ALL_CPUS = frozenset(os.sched_getaffinity(0))


def _all_cpus() -> set[int]:
    return set(ALL_CPUS)


class Raw:
    """A raw connection: hiredis-packed commands out, hiredis-parsed replies in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.parser = reader, writer, hiredis.Reader()

    @classmethod
    async def open(cls, port: int) -> Raw:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send(self, *commands: tuple[Any, ...]) -> None:
        self.writer.write(b"".join(hiredis.pack_command(c) for c in commands))

    async def reply(self) -> Any:
        while (got := self.parser.gets()) is False:
            data = await self.reader.read(1 << 16)
            if not data:
                raise ConnectionError("server closed the connection")
            self.parser.feed(data)
        if isinstance(got, hiredis.ReplyError):
            raise RuntimeError(str(got))
        return got

    def close(self) -> None:
        self.writer.close()


async def _produce(port: int, rate: int, duration_s: float) -> int:
    """XADD at ``rate`` events/s for ``duration_s``, each stamped with time.time_ns()."""
    conn = await Raw.open(port)
    corpus = itertools.cycle(list(events(min(20_000, rate * 4))))
    started, sent = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - started) < duration_s:
        due = int(elapsed * rate) - sent
        if due > 0:
            stamp = str(time.time_ns()).encode()
            conn.send(*(("XADD", SOURCE, "*", *next(corpus), TS_FIELD, stamp) for _ in range(due)))
            for _ in range(due):
                await conn.reply()
            sent += due
        await asyncio.sleep(0.0005)
    conn.close()
    return sent


@dataclass
class Arrivals:
    """(sent, received) ns per event read from the destinations; ``all_in`` once ``expected``."""

    got: list[tuple[int, int]]
    expected: int = -1
    all_in: asyncio.Event | None = None


async def _receive(port: int, streams: list[str], arrivals: Arrivals, stop: asyncio.Event) -> None:
    """Read ``streams`` (each event lands in exactly one); note (sent, received) ns."""
    got = arrivals.got
    conn = await Raw.open(port)
    last = {s: b"0-0" for s in streams}
    while not stop.is_set():
        conn.send(("XREAD", "COUNT", 5000, "BLOCK", 100, "STREAMS", *last, *last.values()))
        reply = await conn.reply()
        now = time.time_ns()
        for stream, entries in reply or ():
            for _id, fields in entries:
                at = fields.index(TS_FIELD)
                got.append((int(fields[at + 1]), now))
            last[stream.decode()] = entries[-1][0]
        if arrivals.all_in is not None and len(got) >= arrivals.expected >= 0:
            arrivals.all_in.set()
    conn.close()


def latency(b: Bench, rate: int, duration_s: float, kind: str = "synapse") -> dict[str, Any]:
    """Offered load ``rate`` for ``duration_s``: XADD -> destination percentiles (ms)."""
    b.fresh(0)
    # Unpinned: the load driver, the server and the router each wake per event; pinned
    # two to a core they queue behind each other (p50 ~3x worse here, measured).
    everywhere = _all_cpus()
    pin(b.server_pid, everywhere)
    pin(os.getpid(), everywhere)
    worker = b.worker(kind, "latency", pinned=False)
    streams = list(TOPICS) if kind == "synapse" else baseline_streams(b.fanout)[:1]
    got: list[tuple[int, int]] = []

    async def run() -> tuple[int, float]:
        stop = asyncio.Event()
        all_in = asyncio.Event()
        arrivals = Arrivals(got, all_in=all_in)
        receiver = asyncio.create_task(_receive(b.server.port, streams, arrivals, stop))
        cpu0 = worker.cpu_s()
        sent = arrivals.expected = await _produce(b.server.port, rate, duration_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), 10)
        cpu = worker.cpu_s() - cpu0
        stop.set()
        await receiver
        return sent, cpu

    try:
        worker.go()
        sent, cpu = asyncio.run(run())
    finally:
        worker.stop()
        pin(os.getpid(), b.pinning.driver)
    if len(got) != sent:
        raise RuntimeError(f"latency: {len(got)} of {sent} events arrived")
    first = min(s for s, _ in got)
    warmup_ns = int(min(1.0, duration_s / 10) * 1e9)
    lat = sorted((r - s) / 1e6 for s, r in got if s - first >= warmup_ns)
    return {
        "kind": kind,
        "rate": rate,
        "seconds": duration_s,
        "events": sent,
        "p50_ms": _pct(lat, 50),
        "p99_ms": _pct(lat, 99),
        "p999_ms": _pct(lat, 99.9),
        "max_ms": lat[-1],
        "client_us_per_event": cpu / sent * 1e6,
    }


def _pct(sorted_values: list[float], p: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


#: The memory phase's flood of distinct event types (issue 10: 12,000 types of 4 KB
#: added ~45 MB when the caches were bounded by entries).
TYPE_FLOOD_EVENTS = 12_000
TYPE_FLOOD_BYTES = 4096


def _type_flood(b: Bench, worker: Worker, count: int) -> dict[str, Any]:
    """Router RSS before and after ``count`` events, each of a new 4 KB type, in two halves."""
    before = worker.rss_mb()
    rss = []
    for half in (count // 2, count - count // 2):
        last = preload(b.server.port, half, type_bytes=TYPE_FLOOD_BYTES)
        b.wait_drained(last, timeout_s=60 + half / 100)
        b.r.xtrim(SOURCE, maxlen=0)
        b.r.delete(*b.destinations("synapse"), "synapse:dlq")
        rss.append(worker.rss_mb())
    return {
        "events": count,
        "type_bytes": TYPE_FLOOD_BYTES,
        "rss_mb_before": before,
        "rss_mb_half": rss[0],
        "rss_mb_after": rss[1],
        "growth_mb": rss[1] - before,
        "growth_second_half_mb": rss[1] - rss[0],
    }


def memory(b: Bench, total: int, chunk: int) -> dict[str, Any]:
    """Router RSS after each ``chunk`` of ``total`` events (source and copies trimmed between)."""
    b.fresh(0)
    pin(b.server_pid, b.pinning.server)
    worker = b.worker("synapse", "memory")
    samples: list[tuple[int, float]] = []
    try:
        worker.go()
        done = 0
        while done < total:
            n = min(chunk, total - done)
            last = preload(b.server.port, n)
            done += n
            b.wait_drained(last, timeout_s=60 + n / 1000)
            b.r.xtrim(SOURCE, maxlen=0)
            b.r.delete(*b.destinations("synapse"))
            samples.append((done, worker.rss_mb()))
        flood = _type_flood(b, worker, min(total, TYPE_FLOOD_EVENTS))
    finally:
        worker.stop()
    steady = samples[min(1, len(samples) - 1)][1]
    return {
        "type_flood": flood,
        "events": total,
        "samples": samples,
        "rss_mb_steady": steady,
        "rss_mb_end": samples[-1][1],
        "rss_mb_max": max(m for _, m in samples),
        "growth_mb": samples[-1][1] - steady,
    }
