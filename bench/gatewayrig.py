"""The rig both gateway benchmarks run on: one ``synapse-gateway``, its SSE clients, the readings.

``bench.gateway`` (Redis) and ``bench.gatewaykafka`` differ only in how events
reach the backend and in what they count the gateway's backend clients by; the
rest (start the gateway, connect one client and then the others, read
connections, RSS and CPU around the send, wait until every client has every
event, stop, check the counts) is one procedure, here, so that both measure the
same thing the same way. Each benchmark builds its own JSON and text from the
``Measured`` this returns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from synapse.embedded import free_port

STREAM = "gateway-bench"
PAD = "x" * 220  # ~300-byte events, like the other phases
GATEWAY = str(Path(sys.executable).parent / "synapse-gateway")
#: Processes holding the SSE clients (1000 browsers would be 1000 machines).
HELPERS = 4
#: How long the clients get, after the last send, to have every event.
CATCH_UP_S = 60


class Clients:
    """One helper process holding ``n`` SSE connections."""

    def __init__(self, port: int, n: int) -> None:
        self.n = n
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.sseclients", "127.0.0.1", str(port), str(n),
             f"stream={STREAM}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def ready(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"sse clients failed to connect: {line!r}")

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
            answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        except (OSError, ValueError):
            raise RuntimeError(f"sse client process ended ({self.proc.poll()})") from None
        return answer

    def stop(self) -> dict[str, Any]:
        out = self.ask("stop")
        self.proc.wait(30)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Measured:
    """What one run read; the figures both benchmarks report are derived here, once."""

    unit: str  # what the count is called: "events", "records"
    clients: int  # connected, the first one included
    rate: int
    seconds: float
    sent: int
    wall_s: float
    cpu_s: float  # the gateway's, user + system, from the send to the last event in
    runqueue_wait_s: float
    clients_cpu_s: float  # the helper processes'
    server_cpu_s: float  # the backend server's (0 when it is not found)
    load_avg_1m: float
    rss_one: int
    rss_all: int
    rss_end: int
    connections_one: int  # the gateway's backend clients, with one SSE client
    connections_all: int  # ... and with all of them
    written_ms: tuple[float, float]  # the gateway's own histogram: p50, p99 upper bounds
    finals: list[dict[str, Any]]  # each helper's last report

    @property
    def latencies_ms(self) -> list[float]:
        return [x for f in self.finals for x in f["latencies_ms"]]

    @property
    def delivered(self) -> int:
        return self.sent * self.clients

    @property
    def reconnects(self) -> int:
        return sum(int(f["reconnects"]) for f in self.finals)

    @property
    def rss_kb_per_client(self) -> float:
        return (self.rss_all - self.rss_one) / (self.clients - 1) / 1e3

    def head(self) -> dict[str, Any]:
        """The figures both reports open with, in this order."""
        lat = self.latencies_ms
        warm = lat[len(lat) // 20 :] or lat  # the first 5% of reads pay for warm-up
        return {
            "clients": self.clients,
            "rate": self.rate,
            "seconds": self.seconds,
            self.unit: self.sent,
            "delivered": self.delivered,
            "wall_s": self.wall_s,
            "p50_ms": _pct(warm, 50),
            "p99_ms": _pct(warm, 99),
            "max_ms": max(warm),
        }


def measure(
    url: str,
    clients: int,
    rate: int,
    seconds: float,
    folder: Path,
    *,
    send: Callable[[int, float], int],
    connections: Callable[[int], int],
    server: psutil.Process | None,
    unit: str,
) -> Measured:
    """One run of the gateway on ``url`` with ``clients`` + 1 SSE clients.

    ``send(rate, seconds)`` puts the events into the backend and returns how
    many; ``connections(pid)`` counts the gateway's backend clients; ``server``
    is the backend's process, for its CPU. Raises when any client misses an
    event or gets one twice (``unit`` names them in the message).
    """
    port = free_port()
    log = (folder / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [GATEWAY, "--url", url, "--listen", f"127.0.0.1:{port}",
         "--max-clients", str(clients + 10), "--log-format", "json"],
        stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    everyone: list[Clients] = []
    try:
        _wait_ready(port, proc)
        gw = psutil.Process(proc.pid)
        everyone.append(Clients(port, 1))
        everyone[0].ready()
        time.sleep(0.5)
        conns_one, rss_one = connections(proc.pid), gw.memory_info().rss
        per_proc = max(1, -(-clients // HELPERS))
        everyone += [Clients(port, min(per_proc, clients - i)) for i in range(0, clients, per_proc)]
        for g in everyone[1:]:
            g.ready()
        time.sleep(0.5)
        conns_all, rss_all = connections(proc.pid), gw.memory_info().rss
        helpers = [psutil.Process(g.proc.pid) for g in everyone]
        cpu0, wait0 = _cpu_s(gw), _runqueue_wait_s(proc.pid)
        clients_cpu0 = sum(_cpu_s(h) for h in helpers)
        server_cpu0 = _cpu_s(server) if server else 0.0
        started = time.perf_counter()
        sent = send(rate, seconds)
        deadline = time.monotonic() + CATCH_UP_S
        while True:
            reports = [g.ask("report") for g in everyone]
            if all(rep["min"] >= sent for rep in reports) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        wall = time.perf_counter() - started
        cpu, waited = _cpu_s(gw) - cpu0, _runqueue_wait_s(proc.pid) - wait0
        clients_cpu = sum(_cpu_s(h) for h in helpers) - clients_cpu0
        server_cpu = _cpu_s(server) - server_cpu0 if server else 0.0
        load, rss_end = os.getloadavg()[0], gw.memory_info().rss
        written = _histogram_quantiles(port, "synapse_gateway_event_latency_seconds")
        finals = [g.stop() for g in everyone]
    finally:
        for g in everyone:
            if g.proc.poll() is None:
                g.proc.kill()
        proc.terminate()
        proc.wait(30)
        log.close()
    missing = [f for f in finals if f["min"] < sent or f["max"] > sent]
    if missing:
        raise RuntimeError(f"gateway: clients got {missing[0]['min']}..{missing[0]['max']} "
                           f"of {sent} {unit}")  # fmt: skip
    return Measured(
        unit=unit, clients=clients + 1, rate=rate, seconds=seconds, sent=sent, wall_s=wall,
        cpu_s=cpu, runqueue_wait_s=waited, clients_cpu_s=clients_cpu, server_cpu_s=server_cpu,
        load_avg_1m=load, rss_one=rss_one, rss_all=rss_all, rss_end=rss_end,
        connections_one=conns_one, connections_all=conns_all, written_ms=written, finals=finals,
    )  # fmt: skip


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def _histogram_quantiles(port: int, name: str) -> tuple[float, float]:
    """(p50, p99) upper bounds in ms from the gateway's own histogram buckets."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    buckets = []
    for line in text.splitlines():
        if line.startswith(name + "_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    total = buckets[-1][1] if buckets else 0.0

    def upper(q: float) -> float:
        if not total:
            return float("nan")
        return next(le for le, count in buckets if count >= q * total) * 1000

    return upper(0.5), upper(0.99)


def _runqueue_wait_s(pid: int) -> float:
    """Seconds ``pid`` spent runnable but waiting for a CPU (Linux schedstat; 0 elsewhere)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _cpu_s(process: psutil.Process) -> float:
    user, system = process.cpu_times()[:2]
    return float(user + system)


def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("gateway not ready in 30 s")
        time.sleep(0.05)
