"""The ``gateway`` phase: many SSE clients on one ``synapse-gateway``, a steady publish rate.

Starts the real ``synapse-gateway`` command, connects one client and then
``clients`` more (from helper processes, ``bench.sseclients``), publishes
``rate`` events/s for ``seconds``, and waits until every client has every
event. Reports publish-to-client latency (per socket read, its oldest event),
gateway CPU per delivered event (events x clients), gateway RSS per client,
and the Redis connections the gateway holds with 1 client and with all of them.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import psutil
import redis
import redis.asyncio as aioredis

from synapse.embedded import EmbeddedServer, free_port

STREAM = "gateway-bench"
PAD = "x" * 220  # ~300-byte events, like the other phases
GATEWAY = str(Path(sys.executable).parent / "synapse-gateway")
#: Processes holding the SSE clients (1000 browsers would be 1000 machines).
HELPERS = 4


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


def gateway_connections(r: redis.Redis) -> int:
    return sum(1 for c in r.client_list() if c["name"].startswith("synapse-gateway"))


async def publish(url: str, rate: int, seconds: float) -> int:
    """XADD ``rate`` events/s for ``seconds`` (pipelined per tick), each with its time."""
    client = aioredis.Redis.from_url(url)
    sent = 0
    started = time.perf_counter()
    try:
        while (elapsed := time.perf_counter() - started) < seconds:
            due = int(elapsed * rate) - sent
            if due > 0:
                pipe = client.pipeline(transaction=False)
                for i in range(sent, sent + due):
                    body = orjson.dumps({"pt": time.time(), "seq": i, "pad": PAD})
                    pipe.xadd(STREAM, {"type": "bench.tick", "data": body})
                await pipe.execute()
                sent += due
            await asyncio.sleep(0.001)
    finally:
        await client.aclose()
    return sent


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def run(url: str, clients: int, rate: int, seconds: float, folder: Path) -> dict[str, Any]:
    """The phase on the server at ``url``; raises when any client misses an event."""
    port = free_port()
    log = (folder / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [GATEWAY, "--url", url, "--listen", f"127.0.0.1:{port}",
         "--max-clients", str(clients + 10), "--log-format", "json"],
        stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    r = redis.Redis.from_url(url)
    groups: list[Clients] = []
    try:
        _wait_ready(port, proc)
        gw = psutil.Process(proc.pid)
        first = Clients(port, 1)
        first.ready()
        time.sleep(0.5)
        conns_one, rss_one = gateway_connections(r), gw.memory_info().rss
        per_proc = max(1, -(-clients // HELPERS))
        groups = [Clients(port, min(per_proc, clients - i)) for i in range(0, clients, per_proc)]
        for g in groups:
            g.ready()
        time.sleep(0.5)
        conns_all, rss_all = gateway_connections(r), gw.memory_info().rss
        helpers = [psutil.Process(g.proc.pid) for g in [first, *groups]]
        cpu0 = sum(gw.cpu_times()[:2])
        wait0 = _runqueue_wait_s(proc.pid)
        clients_cpu0 = sum(sum(h.cpu_times()[:2]) for h in helpers)
        redis_proc = _server_process(r)
        redis_cpu0 = sum(redis_proc.cpu_times()[:2]) if redis_proc else 0.0
        started = time.perf_counter()
        sent = asyncio.run(publish(url, rate, seconds))
        deadline = time.monotonic() + 60
        while True:
            reports = [g.ask("report") for g in [first, *groups]]
            if all(rep["min"] >= sent for rep in reports) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        wall = time.perf_counter() - started
        cpu = sum(gw.cpu_times()[:2]) - cpu0
        waited = _runqueue_wait_s(proc.pid) - wait0
        clients_cpu = sum(sum(h.cpu_times()[:2]) for h in helpers) - clients_cpu0
        redis_cpu = sum(redis_proc.cpu_times()[:2]) - redis_cpu0 if redis_proc else 0.0
        load = os.getloadavg()[0]
        rss_end = gw.memory_info().rss
        own = _histogram_quantiles(port, "synapse_gateway_event_latency_seconds")
        finals = [g.stop() for g in [first, *groups]]
    finally:
        for g in groups:
            if g.proc.poll() is None:
                g.proc.kill()
        proc.terminate()
        proc.wait(30)
        log.close()
        r.close()
    missing = [f for f in finals if f["min"] < sent or f["max"] > sent]
    if missing:
        raise RuntimeError(f"gateway: clients got {missing[0]['min']}..{missing[0]['max']} "
                           f"of {sent} events")  # fmt: skip
    lat = [x for f in finals for x in f["latencies_ms"]]
    reconnects = sum(f["reconnects"] for f in finals)
    warm = lat[len(lat) // 20 :] or lat
    delivered = sent * (clients + 1)
    return {
        "clients": clients + 1,
        "rate": rate,
        "seconds": seconds,
        "events": sent,
        "delivered": delivered,
        "wall_s": wall,
        "p50_ms": _pct(warm, 50),
        "p99_ms": _pct(warm, 99),
        "max_ms": max(warm),
        "reads_timed": len(lat),
        "slow_client_reconnects": reconnects,
        "gateway_written_p50_ms_at_most": own[0],
        "gateway_written_p99_ms_at_most": own[1],
        "gateway_cpu_s": cpu,
        "gateway_cores_busy": cpu / wall,
        "gateway_runqueue_wait_s": waited,
        "gateway_cpu_us_per_delivery": cpu / delivered * 1e6,
        "gateway_cpu_us_per_event": cpu / sent * 1e6,
        "client_processes_cores_busy": clients_cpu / wall,
        "redis_cores_busy": redis_cpu / wall,
        "load_avg_1m_after": load,
        "rss_mb_one_client": rss_one / 1e6,
        "rss_mb_all_clients": rss_all / 1e6,
        "rss_mb_end": rss_end / 1e6,
        "rss_kb_per_client": (rss_all - rss_one) / clients / 1e3,
        "redis_connections_one_client": conns_one,
        "redis_connections_all_clients": conns_all,
    }


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


def _server_process(r: redis.Redis) -> psutil.Process | None:
    try:
        return psutil.Process(int(r.info("server")["process_id"]))
    except (psutil.Error, KeyError, ValueError):
        return None


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


def report(g: dict[str, Any]) -> str:
    return (
        f"gateway: {g['clients']:,} SSE clients, {g['rate']:,} events/s for {g['seconds']:g}s: "
        f"every client got all {g['events']:,} events, none twice "
        f"({g['slow_client_reconnects']} drops of a slow client, resumed); "
        f"publish-to-client p50 {g['p50_ms']:.1f} ms, "
        f"p99 {g['p99_ms']:.1f} ms, max {g['max_ms']:.1f} ms (gateway's own part, publish to "
        f"written to every socket: p50 <= {g['gateway_written_p50_ms_at_most']:g} ms, p99 <= "
        f"{g['gateway_written_p99_ms_at_most']:g} ms); gateway CPU "
        f"{g['gateway_cpu_us_per_delivery']:.2f} us per delivered event "
        f"({g['gateway_cores_busy']:.2f} cores); RSS {g['rss_kb_per_client']:.1f} KB per client "
        f"({g['rss_mb_all_clients']:.0f} MB with all); Redis connections "
        f"{g['redis_connections_one_client']} with 1 client, "
        f"{g['redis_connections_all_clients']} with {g['clients']:,}; "
        f"the client processes used {g['client_processes_cores_busy']:.2f} cores, Redis "
        f"{g['redis_cores_busy']:.2f}; the gateway waited {g['gateway_runqueue_wait_s']:.1f} s "
        f"of {g['wall_s']:.0f} s for a CPU (load average {g['load_avg_1m_after']:.1f})"
    )


if __name__ == "__main__":  # python -m bench.gateway [clients] [rate] [seconds]
    argv = [int(float(a)) for a in sys.argv[1:]] + [1000, 1000, 20][len(sys.argv) - 1 :]
    with tempfile.TemporaryDirectory(prefix="synapse-gw-bench-") as tmp:
        server = EmbeddedServer(Path(tmp) / "server", extra_args=("--appendonly", "no"))
        server.start()
        try:
            result = run(server.url, argv[0], argv[1], float(argv[2]), Path(tmp))
        finally:
            server.stop()
    print(json.dumps(result, indent=2))
    print(report(result))
    os._exit(0)
