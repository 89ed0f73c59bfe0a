"""The gateway phase on Kafka: many SSE clients on one ``synapse-gateway --url kafka://``.

    .venv/bin/python -m bench.gatewaykafka [clients] [rate] [seconds]   # 200 1000 10

Starts a fresh tansu (memory storage) with the topic ``gateway-bench`` on 3
partitions, the real ``synapse-gateway`` on it, one client and then ``clients``
more (helper processes, ``bench.sseclients``, as ``bench.gateway`` does), produces
``rate`` records/s for ``seconds`` (``acks=all``, a timestamp in each body), and
waits until every client has every record. Reports what ``bench.gateway``
reports, with the gateway's librdkafka clients (threads ``rdk:main``) in place of
Redis connections.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psutil
from confluent_kafka import Producer

from bench.gateway import (
    GATEWAY,
    HELPERS,
    PAD,
    STREAM,
    Clients,
    _histogram_quantiles,
    _pct,
    _runqueue_wait_s,
    _wait_ready,
)
from synapse.backends import kafkaadmin
from synapse.embedded import free_port
from synapse.tansu import TansuBroker

PARTITIONS = 3


def kafka_clients(pid: int) -> int:
    """librdkafka clients in process ``pid`` (one ``rdk:main`` thread each)."""
    found = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += (task / "comm").read_text().strip() == "rdk:main"
        except OSError:
            continue
    return found


def produce(bootstrap: str, rate: int, seconds: float) -> int:
    """``rate`` records/s for ``seconds``, keys spread over the partitions; all acknowledged."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 1})
    sent = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(elapsed * rate) - sent
        for i in range(sent, sent + max(0, due)):
            body = orjson.dumps({"pt": time.time(), "seq": i, "pad": PAD})
            producer.produce(STREAM, body, key=b"%d" % (i % 64), headers=[("type", b"bench.tick")])
        sent += max(0, due)
        producer.poll(0)
        time.sleep(0.001)
    assert producer.flush(60) == 0
    return sent


def run(
    broker: TansuBroker, clients: int, rate: int, seconds: float, folder: Path
) -> dict[str, Any]:
    kafkaadmin.ensure_topics(broker.bootstrap, [STREAM], partitions=PARTITIONS)
    port = free_port()
    log = (folder / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [GATEWAY, "--url", broker.url, "--listen", f"127.0.0.1:{port}",
         "--max-clients", str(clients + 10), "--log-format", "json"],
        stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    groups: list[Clients] = []
    try:
        _wait_ready(port, proc)
        gw = psutil.Process(proc.pid)
        first = Clients(port, 1)
        first.ready()
        time.sleep(0.5)
        kafka_one, rss_one = kafka_clients(proc.pid), gw.memory_info().rss
        per_proc = max(1, -(-clients // HELPERS))
        groups = [Clients(port, min(per_proc, clients - i)) for i in range(0, clients, per_proc)]
        for g in groups:
            g.ready()
        time.sleep(0.5)
        kafka_all, rss_all = kafka_clients(proc.pid), gw.memory_info().rss
        cpu0, wait0 = sum(gw.cpu_times()[:2]), _runqueue_wait_s(proc.pid)
        broker_proc = psutil.Process(broker.process.pid) if broker.process else None
        broker0 = sum(broker_proc.cpu_times()[:2]) if broker_proc else 0.0
        started = time.perf_counter()
        sent = produce(broker.bootstrap, rate, seconds)
        deadline = time.monotonic() + 60
        while True:
            reports = [g.ask("report") for g in [first, *groups]]
            if all(rep["min"] >= sent for rep in reports) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        wall = time.perf_counter() - started
        cpu = sum(gw.cpu_times()[:2]) - cpu0
        waited = _runqueue_wait_s(proc.pid) - wait0
        broker_cpu = sum(broker_proc.cpu_times()[:2]) - broker0 if broker_proc else 0.0
        own = _histogram_quantiles(port, "synapse_gateway_event_latency_seconds")
        finals = [g.stop() for g in [first, *groups]]
    finally:
        for g in groups:
            if g.proc.poll() is None:
                g.proc.kill()
        proc.terminate()
        proc.wait(30)
        log.close()
        kafkaadmin.forget_all()
    missing = [f for f in finals if f["min"] < sent or f["max"] > sent]
    if missing:
        raise RuntimeError(f"gateway: clients got {missing[0]['min']}..{missing[0]['max']} "
                           f"of {sent} records")  # fmt: skip
    lat = [x for f in finals for x in f["latencies_ms"]]
    warm = lat[len(lat) // 20 :] or lat
    delivered = sent * (clients + 1)
    return {
        "clients": clients + 1,
        "rate": rate,
        "seconds": seconds,
        "records": sent,
        "delivered": delivered,
        "wall_s": wall,
        "p50_ms": _pct(warm, 50),
        "p99_ms": _pct(warm, 99),
        "max_ms": max(warm),
        "slow_client_reconnects": sum(f["reconnects"] for f in finals),
        "gateway_written_p50_ms_at_most": own[0],
        "gateway_written_p99_ms_at_most": own[1],
        "gateway_cores_busy": cpu / wall,
        "gateway_runqueue_wait_s": waited,
        "gateway_cpu_us_per_delivery": cpu / delivered * 1e6,
        "broker_cores_busy": broker_cpu / wall,
        "load_avg_1m_after": os.getloadavg()[0],
        "rss_kb_per_client": (rss_all - rss_one) / clients / 1e3,
        "kafka_clients_one_client": kafka_one,
        "kafka_clients_all_clients": kafka_all,
    }


def report(g: dict[str, Any]) -> str:
    return (
        f"gateway on Kafka: {g['clients']:,} SSE clients, {g['rate']:,} records/s for "
        f"{g['seconds']:g}s: every client got all {g['records']:,} records, none twice "
        f"({g['slow_client_reconnects']} drops of a slow client, resumed); produce-to-client "
        f"p50 {g['p50_ms']:.1f} ms, p99 {g['p99_ms']:.1f} ms, max {g['max_ms']:.1f} ms "
        f"(record timestamp to written to every socket: p50 <= "
        f"{g['gateway_written_p50_ms_at_most']:g} ms, p99 <= "
        f"{g['gateway_written_p99_ms_at_most']:g} ms); gateway CPU "
        f"{g['gateway_cpu_us_per_delivery']:.2f} us per delivered record "
        f"({g['gateway_cores_busy']:.2f} cores), broker {g['broker_cores_busy']:.2f} cores; "
        f"librdkafka clients {g['kafka_clients_one_client']} with 1 client, "
        f"{g['kafka_clients_all_clients']} with {g['clients']:,}; the gateway waited "
        f"{g['gateway_runqueue_wait_s']:.1f} s of {g['wall_s']:.0f} s for a CPU "
        f"(load average {g['load_avg_1m_after']:.1f})"
    )


if __name__ == "__main__":  # python -m bench.gatewaykafka [clients] [rate] [seconds]
    argv = [int(float(a)) for a in sys.argv[1:]] + [200, 1000, 10][len(sys.argv) - 1 :]
    with (
        tempfile.TemporaryDirectory(prefix="synapse-gwk-bench-") as tmp,
        TansuBroker(log_dir=Path(tmp)) as broker,
    ):
        result = run(broker, argv[0], argv[1], float(argv[2]), Path(tmp))
    print(json.dumps(result, indent=2))
    print(report(result))
    os._exit(0)
