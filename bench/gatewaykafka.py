"""The gateway phase on Kafka: many SSE clients on one ``synapse-gateway --url kafka://``.

    .venv/bin/python -m bench.gatewaykafka [clients] [rate] [seconds]   # 200 1000 10

Starts a fresh tansu (memory storage) with the topic ``gateway-bench`` on 3
partitions, the real ``synapse-gateway`` on it, one client and then ``clients``
more (helper processes, ``bench.sseclients``, as ``bench.gateway`` does), produces
``rate`` records/s for ``seconds`` (``acks=all``, a timestamp in each body), and
waits until every client has every record. Reports what ``bench.gateway``
reports, with the gateway's librdkafka clients (threads ``rdk:main``) in place of
Redis connections. The procedure is ``bench.gatewayrig``'s, shared with ``bench.gateway``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psutil
from confluent_kafka import Producer

from bench.gatewayrig import PAD, STREAM, measure
from synapse.backends import kafkaadmin
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
    try:
        m = measure(
            broker.url, clients, rate, seconds, folder,
            send=functools.partial(produce, broker.bootstrap), connections=kafka_clients,
            server=psutil.Process(broker.process.pid) if broker.process else None,
            unit="records",
        )  # fmt: skip
    finally:
        kafkaadmin.forget_all()
    return {
        **m.head(),
        "slow_client_reconnects": m.reconnects,
        "gateway_written_p50_ms_at_most": m.written_ms[0],
        "gateway_written_p99_ms_at_most": m.written_ms[1],
        "gateway_cores_busy": m.cpu_s / m.wall_s,
        "gateway_runqueue_wait_s": m.runqueue_wait_s,
        "gateway_cpu_us_per_delivery": m.cpu_s / m.delivered * 1e6,
        "broker_cores_busy": m.server_cpu_s / m.wall_s,
        "load_avg_1m_after": m.load_avg_1m,
        "rss_kb_per_client": m.rss_kb_per_client,
        "kafka_clients_one_client": m.connections_one,
        "kafka_clients_all_clients": m.connections_all,
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
