"""synapse-router as a real subprocess: routes, ready, the port, signals, exit codes."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from synapse import allocator
from synapse.embedded import server_binary
from synapse.routercli import main
from tests.conftest import ROOT, wait_sync, write_table
from tests.support.router import RouterProcess, router_args

README_BODY = (
    '{"model_id": "m1", "version": "1.0.0", "artifact_uri": "file:///tmp/m1.onnx", '
    '"framework": "onnx", "stage": "production", "metrics": {"accuracy": 0.97}}'
)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., RouterProcess]]:
    """Start daemons with these arguments; any still running at the end is killed."""
    started: list[RouterProcess] = []

    def start(*args: str, cwd: Path | None = None, program: str | None = None) -> RouterProcess:
        log_path = tmp_path / "logs" / f"daemon-{len(started)}.log"
        daemon = RouterProcess(None, None, args=args, program=program, cwd=cwd, log_path=log_path)
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        daemon.kill()


def xlen(r: redis.Redis, key: str) -> int:
    return int(r.xlen(key)) if r.exists(key) else 0


def route_readme_example(r: redis.Redis) -> bytes:
    """XADD the README's model.ready and wait until it lands in both destinations."""
    eid: bytes = r.xadd("ingress", {"type": "model.ready", "data": README_BODY})
    wait_sync(lambda: xlen(r, "model-events") == 1, 10, "model-events")
    wait_sync(lambda: xlen(r, "platform-events") == 1, 10, "platform-events")
    [(_, fields)] = r.xrange("model-events")
    assert fields[b"data"] == README_BODY.encode()
    assert fields[b"synapse-id"] == eid
    return eid


def test_routes_reports_ready_and_serves_the_port(
    spawn: Callable[..., RouterProcess], url: str, r: redis.Redis
) -> None:
    """The daemon routes an event, /readyz turns 200, /metrics counts it, others 404; SIGTERM: 0."""
    daemon = spawn(*router_args(None, url))
    daemon.wait_ready()
    assert daemon.get("/healthz")[0] == 200
    route_readme_example(r)

    def routed() -> bool:
        text = daemon.get("/metrics")[1]
        return 'synapse_events_routed_total{destination="platform-events"' in text

    wait_sync(routed, 10, "routed counter")
    status, text = daemon.get("/metrics")
    assert status == 200
    assert 'synapse_events_consumed_total{source="ingress"} 1.0' in text
    assert "synapse_redis_up 1.0" in text
    assert "synapse_build_info{" in text
    assert daemon.get("/nope")[0] == 404
    assert daemon.get("/")[0] == 404
    assert daemon.stop(signum=signal.SIGTERM) == 0
    names = [e.get("event") for e in daemon.events()]
    assert "router_stopped" in names
    assert all("password" not in line for line in daemon.raw)


def test_exits_0_on_sigint(spawn: Callable[..., RouterProcess], url: str, r: redis.Redis) -> None:
    """SIGINT stops the daemon cleanly with exit 0 after routing."""
    daemon = spawn(*router_args(None, url))
    daemon.wait_ready()
    route_readme_example(r)
    assert daemon.stop(signum=signal.SIGINT) == 0
    assert daemon.wait_log("stop_requested")["signal"] == "SIGINT"
    assert not r.xpending("ingress", "synapse-router")["pending"]


def test_bad_config_exits_78_with_file_and_line(
    spawn: Callable[..., RouterProcess], url: str, tmp_path: Path
) -> None:
    """A bad table at start: exit 78 (EX_CONFIG) and the log names file:line."""
    config = write_table(
        tmp_path, "version: 1\nsources: [ingress]\nroutes:\n  - name: a\n    match: x\n    tos: y\n"
    )
    daemon = spawn(*router_args(config, url))
    assert daemon.wait(30) == 78
    errors = daemon.wait_log("config_invalid")["errors"]
    assert any(e.startswith(f"{config}:6: unknown key 'tos'") for e in errors), errors


def test_metrics_port_in_use_exits_1(
    spawn: Callable[..., RouterProcess], url: str, r: redis.Redis
) -> None:
    """A metrics address already taken is reported and the daemon exits 1 (not a hang)."""
    first = spawn(*router_args(None, url))
    first.wait_ready()
    second = spawn(*router_args(None, url)[:-4], "--metrics-addr", f"127.0.0.1:{first.port}")
    assert second.wait(30) == 1
    assert second.wait_log("metrics_port_unavailable")
    assert first.stop(signum=signal.SIGTERM) == 0


@pytest.mark.parametrize(
    "addr", ["nonsense", "127.0.0.1:", "127.0.0.1:http", "h:70000", "h:\u00b2"]
)
def test_bad_metrics_addr_is_a_usage_error(addr: str) -> None:
    """A malformed --metrics-addr is refused with exit 2 and a message, not a traceback."""
    result = CliRunner().invoke(main, ["--metrics-addr", addr])
    assert result.exit_code == 2
    assert "is not HOST:PORT" in result.output
    assert "Traceback" not in result.output


def test_embedded_server_in_state_dir(
    spawn: Callable[..., RouterProcess], tmp_path: Path, r: redis.Redis
) -> None:
    """With no URL: an embedded server in --state-dir, its URL in redis.url, stopped on exit;
    the start is logged with the server binary and the allocator it really runs with."""
    state = tmp_path / "state"
    daemon = spawn(*router_args(None, None, "--state-dir", str(state)))
    started = daemon.wait_log("embedded_server_started")
    assert started["server"] == server_binary()
    preloadable = [n for n, find in allocator.FINDERS.items() if find() is not None]
    assert started["allocator"] == (preloadable[0] if preloadable else "libc")
    url_file = state / "redis.url"
    assert started["url_file"] == str(url_file)
    url = url_file.read_text().strip()
    assert url == started["url"] and url.startswith("redis://127.0.0.1:")
    daemon.wait_ready()
    local = redis.Redis.from_url(url)
    try:
        route_readme_example(local)
        assert (state / "data" / "server.log").exists()
        pid = int((state / "server.pid").read_text())
        assert daemon.stop(signum=signal.SIGTERM) == 0
        wait_sync(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), 10, "server gone")
        assert not url_file.exists()
        with pytest.raises(redis.ConnectionError):
            local.ping()
        assert daemon.wait_log("embedded_server_stopped")
    finally:
        local.close()
    assert xlen(r, "model-events") == 0  # the suite's server was never touched


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_bin_run_routes_the_readme_example(
    spawn: Callable[..., RouterProcess], tmp_path: Path
) -> None:
    """bin/run passes its arguments on, reaches ready, routes the README example, stops on ^C."""
    state = tmp_path / "state"
    daemon = spawn(
        "--metrics-addr",
        "127.0.0.1:0",
        "--state-dir",
        str(state),
        "--log-format",
        "json",
        program=str(ROOT / "bin" / "run"),
    )
    url = daemon.wait_log("embedded_server_started", timeout_s=90)["url"]
    daemon.wait_ready()
    assert daemon.wait_log("router_starting")["config"] == "config/routes.yaml"
    local = redis.Redis.from_url(url)
    try:
        route_readme_example(local)
    finally:
        local.close()
    assert daemon.stop(signum=signal.SIGINT) == 0
    assert not (state / "redis.url").exists()


def test_second_router_on_a_state_dir_leaves_the_first_alone(
    spawn: Callable[..., RouterProcess], tmp_path: Path
) -> None:
    """A second start on the same state folder says "already running (pid N)" and exits 75."""
    state = tmp_path / "state"
    first = spawn(*router_args(None, None, "--state-dir", str(state)))
    url = first.wait_log("embedded_server_started")["url"]
    first.wait_ready()
    server_pid = (state / "server.pid").read_text()
    before = {p.name: p.stat().st_mtime_ns for p in state.iterdir()}
    second = spawn(*router_args(None, None, "--state-dir", str(state)))
    assert second.wait(60) == 75
    failed = second.wait_log("router_failed")
    assert f"already running (pid {first.pid})" in failed["error"]
    assert not [e for e in second.events() if e.get("event") == "stale_embedded_server"]
    assert {p.name: p.stat().st_mtime_ns for p in state.iterdir()} == before  # nothing touched
    assert (state / "server.pid").read_text() == server_pid
    local = redis.Redis.from_url(url)
    try:
        assert local.ping()  # the first one's server is alive, and so is the first router
        route_readme_example(local)
    finally:
        local.close()
    first.wait_ready()
    assert first.stop(signum=signal.SIGTERM) == 0
    third = spawn(*router_args(None, None, "--state-dir", str(state)))  # the lock went with it
    third.wait_ready()
    assert third.stop(signum=signal.SIGTERM) == 0


def test_stale_server_of_a_killed_router_is_stopped_but_no_stranger(
    spawn: Callable[..., RouterProcess], tmp_path: Path
) -> None:
    """After SIGKILL the next router stops the orphaned server; a reused pid is never signalled."""
    state = tmp_path / "state"
    first = spawn(*router_args(None, None, "--state-dir", str(state)))
    first.wait_ready()
    orphan = int((state / "server.pid").read_text())
    first.kill()
    second = spawn(*router_args(None, None, "--state-dir", str(state)))
    assert second.wait_log("stale_embedded_server")["pid"] == orphan
    second.wait_ready()
    assert second.stop(signum=signal.SIGTERM) == 0
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)", "fake-server"]
    stranger = subprocess.Popen(sleeper, cwd=tmp_path)  # "server" in its cmdline, not ours
    try:
        (state / "server.pid").write_text(f"{stranger.pid}\n")
        third = spawn(*router_args(None, None, "--state-dir", str(state)))
        third.wait_ready()
        assert stranger.poll() is None
        assert third.stop(signum=signal.SIGTERM) == 0
    finally:
        stranger.kill()
        stranger.wait(10)
