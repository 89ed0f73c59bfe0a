"""One real `synapse` process per command group; redrive and replay killed mid-way lose nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.cli.conftest import ROOT, SHIPPED
from tests.conftest import wait_sync
from tests.support.deadletters import dead_letter_entry

SYNAPSE = str(Path(sys.executable).parent / "synapse")
ROUTER = str(Path(sys.executable).parent / "synapse-router")


def env(url: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("SYNAPSE_")}
    out.update(SYNAPSE_REDIS_URL=url, SYNAPSE_CONFIG=str(SHIPPED))
    return out


def run(url: str, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [SYNAPSE, *args], env=env(url), input=input, capture_output=True, timeout=60, cwd=ROOT
    )


def test_shipped_routing_tests_run_as_a_command() -> None:
    """`synapse test` (as bin/test runs it) passes on config/tests; `route` reads stdin."""
    result = subprocess.run([SYNAPSE, "test"], capture_output=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stdout.decode()
    assert re.search(rb"^\d+ passed in", result.stdout, re.M)
    route = subprocess.run(
        [SYNAPSE, "route", "--type", "x.error", "-"],
        input=b'{"service": "a", "message": "m", "severity": "critical"}',
        capture_output=True,
        timeout=60,
        cwd=ROOT,
    )
    assert route.returncode == 0 and b"routed to error-events" in route.stdout


def test_publish_process(url: str, r: redis.Redis) -> None:
    """A real `synapse publish` prints the id it added; a bad body exits 1."""
    result = run(url, "publish", "ingress", "--type", "platform.up", '{"service": "api"}')
    assert result.returncode == 0
    assert r.xrange("ingress")[0][0] == result.stdout.strip()
    assert run(url, "publish", "ingress", "--type", "platform.up", "{}").returncode == 1


def test_tail_follow_stops_cleanly_on_ctrl_c(url: str, r: redis.Redis) -> None:
    """tail --follow prints new entries and exits 130 on SIGINT (Ctrl-C), as documented."""
    r.xadd("s", {"type": "a.b", "data": '{"n": 0}'})
    proc = subprocess.Popen(
        [SYNAPSE, "tail", "s", "--follow", "--json"], env=env(url), stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["body"] == {"n": 0}
        r.xadd("s", {"type": "a.b", "data": '{"n": 1}'})
        assert json.loads(proc.stdout.readline())["body"] == {"n": 1}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _dead_letters(r: redis.Redis, count: int) -> None:
    pipe = r.pipeline()
    for n in range(count):
        original = [b"type", b"a.b", b"n", str(n).encode()]
        fields = dead_letter_entry(original, n=n, reason="destination_error")
        pipe.xadd("synapse:dlq", dict(zip(fields[::2], fields[1::2], strict=True)))
    pipe.execute()


def _kill_when(proc: subprocess.Popen[bytes], ready: object) -> None:
    try:
        wait_sync(ready, timeout_s=30, what="progress before the kill")  # type: ignore[arg-type]
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_redrive_killed_midway_loses_and_doubles_nothing(url: str, r: redis.Redis) -> None:
    """SIGKILL during a redrive, then a rerun: every dead letter reaches the source exactly once."""
    total = 400
    _dead_letters(r, total)
    proc = subprocess.Popen(
        [SYNAPSE, "dlq", "redrive", "--rate", "400"], env=env(url), stdout=subprocess.DEVNULL
    )
    _kill_when(proc, lambda: r.exists("ingress") and r.xlen("ingress") >= 60)
    moved, left = r.xlen("ingress"), r.xlen("synapse:dlq")
    assert moved + left == total and 0 < left < total  # killed mid-way, and consistent then
    rerun = run(url, "dlq", "redrive", "--json")
    assert rerun.returncode == 0 and json.loads(rerun.stdout)["redriven"] == left
    ns = [int(f[b"n"]) for _, f in r.xrange("ingress")]
    assert sorted(ns) == list(range(total))  # the ledger: each exactly once
    assert r.xlen("synapse:dlq") == 0


@pytest.mark.slow
def test_replay_killed_midway_loses_and_doubles_nothing(url: str, r: redis.Redis) -> None:
    """SIGKILL during a replay, then a rerun: DEST holds each source entry once, in order."""
    total = 1000
    pipe = r.pipeline()
    for n in range(total):
        pipe.xadd("src", {"type": "a.b", "n": str(n)})
    pipe.execute()
    args = ["replay", "src", "--to", "dst", "--since", "-1d"]
    proc = subprocess.Popen(
        [SYNAPSE, *args, "--rate", "1000"], env=env(url), stdout=subprocess.DEVNULL
    )
    _kill_when(proc, lambda: r.exists("dst") and r.xlen("dst") >= 150)
    assert 0 < r.xlen("dst") < total
    rerun = run(url, *args, "--json")
    assert rerun.returncode == 0 and json.loads(rerun.stdout)["resumed_after"]
    source_ids = [eid for eid, _ in r.xrange("src")]
    assert [f[b"synapse-replay-of"] for _, f in r.xrange("dst")] == source_ids


@pytest.mark.slow
def test_router_registers_and_topology_shows_it(url: str, r: redis.Redis, tmp_path: Path) -> None:
    """A real router is listed by `services` with its config hash, and leaves on SIGTERM."""
    router = subprocess.Popen(
        [ROUTER, "--metrics-addr", "127.0.0.1:0", "--log-format", "json"],
        env=env(url),
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    try:

        def listed() -> list[dict[str, object]]:
            out = run(url, "services", "--json")
            assert out.returncode == 0, out.stderr
            services: list[dict[str, object]] = json.loads(out.stdout)["services"]
            return services

        wait_sync(lambda: bool(listed()), timeout_s=30, what="router registered")
        [svc] = listed()
        check = json.loads(run(url, "check", "--json").stdout)
        assert svc["kind"] == "router" and svc["config"] == check["hash"]
        assert svc["consumes"] == ["ingress", "ingress:*"]
        topo = run(url, "topology", "--format", "json")
        nodes = {n["id"]: n for n in json.loads(topo.stdout)["nodes"]}
        assert nodes["router:synapse-router"]["instances"] == 1  # the router's own node
        router.send_signal(signal.SIGTERM)
        assert router.wait(timeout=30) == 0
        assert listed() == []  # deregistered on a clean stop
    finally:
        router.kill()
        router.wait()


@pytest.mark.slow
def test_redrive_ctrl_c_stops_cleanly(url: str, r: redis.Redis) -> None:
    """SIGINT during a redrive: exit 130 with a summary saying so, nothing lost in between."""
    total = 300
    _dead_letters(r, total)
    proc = subprocess.Popen(
        [SYNAPSE, "dlq", "redrive", "--rate", "300"], env=env(url), stdout=subprocess.PIPE
    )
    try:
        wait_sync(lambda: bool(r.exists("ingress")) and r.xlen("ingress") >= 30, what="progress")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130
    assert b"interrupted: rerun to continue" in out
    assert r.xlen("ingress") + r.xlen("synapse:dlq") == total
