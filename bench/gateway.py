"""The ``gateway`` phase: many SSE clients on one ``synapse-gateway``, a steady publish rate.

Starts the real ``synapse-gateway`` command, connects one client and then
``clients`` more (from helper processes, ``bench.sseclients``), publishes
``rate`` events/s for ``seconds``, and waits until every client has every
event. Reports publish-to-client latency (per socket read, its oldest event),
gateway CPU per delivered event (events x clients), gateway RSS per client,
and the Redis connections the gateway holds with 1 client and with all of them.
The procedure is ``bench.gatewayrig``'s, shared with ``bench.gatewaykafka``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psutil
import redis
import redis.asyncio as aioredis

from bench.gatewayrig import PAD, STREAM, measure
from synapse.embedded import EmbeddedServer


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


def run(url: str, clients: int, rate: int, seconds: float, folder: Path) -> dict[str, Any]:
    """The phase on the server at ``url``; raises when any client misses an event."""
    r = redis.Redis.from_url(url)
    try:
        m = measure(
            url, clients, rate, seconds, folder,
            send=lambda rate, seconds: asyncio.run(publish(url, rate, seconds)),
            connections=lambda _pid: gateway_connections(r),
            server=_server_process(r), unit="events",
        )  # fmt: skip
    finally:
        r.close()
    return {
        **m.head(),
        "reads_timed": len(m.latencies_ms),
        "slow_client_reconnects": m.reconnects,
        "gateway_written_p50_ms_at_most": m.written_ms[0],
        "gateway_written_p99_ms_at_most": m.written_ms[1],
        "gateway_cpu_s": m.cpu_s,
        "gateway_cores_busy": m.cpu_s / m.wall_s,
        "gateway_runqueue_wait_s": m.runqueue_wait_s,
        "gateway_cpu_us_per_delivery": m.cpu_s / m.delivered * 1e6,
        "gateway_cpu_us_per_event": m.cpu_s / m.sent * 1e6,
        "client_processes_cores_busy": m.clients_cpu_s / m.wall_s,
        "redis_cores_busy": m.server_cpu_s / m.wall_s,
        "load_avg_1m_after": m.load_avg_1m,
        "rss_mb_one_client": m.rss_one / 1e6,
        "rss_mb_all_clients": m.rss_all / 1e6,
        "rss_mb_end": m.rss_end / 1e6,
        "rss_kb_per_client": m.rss_kb_per_client,
        "redis_connections_one_client": m.connections_one,
        "redis_connections_all_clients": m.connections_all,
    }


def _server_process(r: redis.Redis) -> psutil.Process | None:
    try:
        return psutil.Process(int(r.info("server")["process_id"]))
    except (psutil.Error, KeyError, ValueError):
        return None


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
