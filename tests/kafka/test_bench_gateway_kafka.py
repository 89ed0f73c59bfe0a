"""The gateway bench on Kafka keeps working: a small run completes with exact counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_quick_gateway_kafka_bench_delivers_everything_on_two_kafka_clients() -> None:
    """`python -m bench.gatewaykafka`: every client gets every record once; the gateway
    holds two librdkafka clients with one browser and with all."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.gatewaykafka", "30", "200", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    g = json.loads(done.stdout[: done.stdout.rindex("}") + 1])
    assert g["clients"] == 31 and g["records"] >= 300
    assert g["delivered"] == g["records"] * g["clients"]
    assert 0 < g["p50_ms"] <= g["p99_ms"] <= g["max_ms"]
    assert g["kafka_clients_one_client"] == g["kafka_clients_all_clients"] == 2
    assert "every client got all" in done.stdout and "none twice" in done.stdout
