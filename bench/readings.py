"""What a pipeline run reads: CPU per process, stored copies, server figures, latency.

Shared by ``bench.pipeline`` (the headline), ``bench.profile --pipeline`` and
``bench.luaab``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis

from bench.phases import Arrivals, _pct, _receive
from bench.proc import Worker, cpu_s

COMMANDS = ("evalsha", "xreadgroup", "xadd", "xack", "xautoclaim", "xpending")


def percentiles(got: list[tuple[int, int]], expected: int) -> dict[str, Any]:
    """Latency percentiles (ms) after the first tenth of the run (warm-up)."""
    if len(got) != expected:
        raise RuntimeError(f"latency: {len(got)} of {expected} copies read back")
    first = min(s for s, _ in got)
    last = max(s for s, _ in got)
    skip = first + (last - first) // 10
    lat = sorted((r - s) / 1e6 for s, r in got if s >= skip)
    return {
        "read_back": len(got),
        "p50_ms": _pct(lat, 50),
        "p99_ms": _pct(lat, 99),
        "p999_ms": _pct(lat, 99.9),
        "max_ms": lat[-1],
    }


def wait_done(producer: Worker, count: int, timeout_s: float) -> None:
    """Until the producer says it published (and had acknowledged) all ``count``."""
    line = producer.wait_line(timeout_s)
    if line != f"done {count}":
        raise RuntimeError(f"producer: {line!r}, expected 'done {count}'")


def until(condition: Callable[[], bool], timeout_s: float) -> None:
    """Poll ``condition`` every 5 ms until it holds; raise after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"copies not stored within {timeout_s}s")
        time.sleep(0.005)


def group_done(r: redis.Redis, count: int) -> bool:
    """The router's group has read ``count`` entries and has none pending."""
    group = r.xinfo_groups("ingress")[0]
    return bool(group["entries-read"] == count and group["pending"] == 0)


def xlens(r: redis.Redis, streams: dict[str, int]) -> dict[str, int]:
    pipe = r.pipeline(transaction=False)
    for s in streams:
        pipe.xlen(s)
    return {s: int(n) for s, n in zip(streams, pipe.execute(), strict=True)}


@contextlib.contextmanager
def environ(extra: dict[str, str]) -> Iterator[None]:
    """``extra`` in os.environ while the server process is spawned (it copies the env)."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def entry_bytes(r: redis.Redis, stream: str) -> int:
    """Bytes of field names and values of the stream's first entry (0 when empty)."""
    entries: Any = r.xrange(stream, count=1)
    return sum(len(k) + len(v) for k, v in entries[0][1].items()) if entries else 0


def cpu(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_s(pid, children=name == "server") for name, pid in pids.items()}


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before}


def server_stats(r: redis.Redis) -> dict[str, Any]:
    """Per-command calls and server µs (INFO commandstats), AOF size and rewrites."""
    stats = r.info("commandstats")
    persistence = r.info("persistence")
    commands = {
        c: {"calls": stats[f"cmdstat_{c}"]["calls"], "usec": stats[f"cmdstat_{c}"]["usec"]}
        for c in COMMANDS
        if f"cmdstat_{c}" in stats
    }
    return {
        "commands": commands,
        "aof_current_size": persistence.get("aof_current_size", 0),
        "aof_rewrites": persistence.get("aof_rewrites", 0),
    }


def check(name: str, got: dict[str, int], want: dict[str, int], pending: int) -> None:
    """Every stream holds exactly what the workload puts there, nothing left pending."""
    if got != want or pending:
        raise RuntimeError(f"{name}: stored {got}, expected {want}, pending {pending}")


def result(
    name: str,
    stored_copies: int,
    count: int,
    rate: int,
    measured: dict[str, Any],
    cpu: dict[str, float],
    got: dict[str, int],
    stats: dict[str, Any],
) -> dict[str, Any]:
    us = {f"{k}_us_per_event": v / count * 1e6 for k, v in cpu.items()}
    us.setdefault("router_us_per_event", 0.0)
    seconds = measured["seconds"]
    return {
        "variant": name,
        "events": count,
        "rate": rate,
        "events_per_s": count / seconds,
        **measured,
        **us,
        "total_us_per_event": sum(v for k, v in us.items()),
        "stored_copies": stored_copies,
        "copies": got,
        **stats,
    }


async def read_back(
    port: int, stream: str, producer: Worker, count: int, sampled: int, timeout_s: float
) -> dict[str, Any]:
    """Start the paced producer and read ``stream`` (``sampled`` of its ``count`` events
    land there); publish-to-copy percentiles."""
    got: list[tuple[int, int]] = []
    all_in = asyncio.Event()
    arrivals = Arrivals(got, expected=sampled, all_in=all_in)
    stop = asyncio.Event()
    receiver = asyncio.create_task(_receive(port, [stream], arrivals, stop))
    started = time.perf_counter()
    producer.go()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, wait_done, producer, count, timeout_s)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_in.wait(), timeout_s)
    seconds = time.perf_counter() - started
    stop.set()
    await receiver
    return {"seconds": seconds, **percentiles(got, sampled)}
