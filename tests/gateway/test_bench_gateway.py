"""The gateway bench phase keeps working: a small run completes and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_quick_gateway_phase_delivers_everything_on_constant_redis_connections(
    tmp_path: Path,
) -> None:
    """`bench --only gateway`: all clients get all events; Redis connections do not grow."""
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "gateway", "--out", str(out),
         "--gateway-clients", "40", "--gateway-rate", "200", "--gateway-seconds", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    g = json.loads(out.read_text())["gateway"]
    assert g["clients"] == 41 and g["events"] >= 300
    assert g["delivered"] == g["events"] * g["clients"]
    assert 0 < g["p50_ms"] <= g["p99_ms"] <= g["max_ms"]
    assert g["gateway_cpu_us_per_delivery"] > 0 and g["rss_kb_per_client"] is not None
    # the reader plus a pool of at most CONTROL_CONNECTIONS, however many clients
    assert g["redis_connections_one_client"] <= g["redis_connections_all_clients"] <= 5
    assert g["slow_client_reconnects"] >= 0 and g["gateway_runqueue_wait_s"] >= 0
    assert "every client got all" in done.stdout and "none twice" in done.stdout
