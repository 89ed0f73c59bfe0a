"""synapse-router as a real subprocess: routes, ready, the port, signals, exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from synapse.daemon import main
from tests.conftest import ROOT, wait_sync, write_table

ROUTER = Path(sys.executable).parent / "synapse-router"
README_BODY = (
    '{"model_id": "m1", "version": "1.0.0", "artifact_uri": "file:///tmp/m1.onnx", '
    '"framework": "onnx", "stage": "production", "metrics": {"accuracy": 0.97}}'
)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any SYNAPSE_* or systemd setting that would change the daemon."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SYNAPSE_") and k not in ("STATE_DIRECTORY", "NOTIFY_SOCKET")
    }
    if "SYNAPSE_SERVER" in os.environ:  # the engine the suite runs on
        env["SYNAPSE_SERVER"] = os.environ["SYNAPSE_SERVER"]
    env.update(extra)
    return env


class Daemon:
    """A running synapse-router (or bin/run) with its JSON log lines collected from stderr."""

    def __init__(self, args: list[str], cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=clean_env(),
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    @property
    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict):
                out.append(item)
        return out

    def event(self, name: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """The first log event called ``name``, waiting for it (failing early if we exit)."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [e for e in self.events if e.get("event") == name]
            if not found and self.proc.poll() is not None:
                self._reader.join(5)
                found[:] = [e for e in self.events if e.get("event") == name]
                if not found:
                    raise AssertionError(f"exited {self.proc.returncode}: {self.lines[-20:]}")
            return bool(found)

        wait_sync(seen, timeout_s, f"log event {name}")
        return found[0]

    @property
    def port(self) -> int:
        metrics_url = self.event("router_starting")["metrics"]
        match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/metrics", metrics_url)
        assert match, metrics_url
        return int(match.group(1))

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        wait_sync(lambda: self.get("/readyz")[0] == 200, timeout_s, "/readyz 200")

    def stop(self, signum: int, timeout_s: float = 30.0) -> int:
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout_s)
        self._reader.join(5)
        return code

    def close(self) -> None:
        """Kill the process if it still runs, and release its pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@pytest.fixture
def spawn() -> Iterator[Callable[..., Daemon]]:
    """Start daemons; any still running at the end is killed."""
    started: list[Daemon] = []

    def start(*args: str, cwd: Path | None = None, program: str | None = None) -> Daemon:
        daemon = Daemon([program or str(ROUTER), *args], cwd=cwd)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.close()


def router_args(url: str | None, config: Path | None = None, *extra: str) -> list[str]:
    args = ["--config", str(config or ROOT / "config" / "routes.yaml")]
    if url:
        args += ["--redis-url", url]
    return [*args, "--metrics-addr", "127.0.0.1:0", "--log-format", "json", *extra]


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
    spawn: Callable[..., Daemon], url: str, r: redis.Redis
) -> None:
    """The daemon routes an event, /readyz turns 200, /metrics counts it, others 404; SIGTERM: 0."""
    daemon = spawn(*router_args(url))
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
    assert daemon.stop(signal.SIGTERM) == 0
    names = [e.get("event") for e in daemon.events]
    assert "router_stopped" in names
    assert all("password" not in line for line in daemon.lines)


def test_exits_0_on_sigint(spawn: Callable[..., Daemon], url: str, r: redis.Redis) -> None:
    """SIGINT stops the daemon cleanly with exit 0 after routing."""
    daemon = spawn(*router_args(url))
    daemon.wait_ready()
    route_readme_example(r)
    assert daemon.stop(signal.SIGINT) == 0
    assert daemon.event("stop_requested")["signal"] == "SIGINT"
    assert not r.xpending("ingress", "synapse-router")["pending"]


def test_bad_config_exits_78_with_file_and_line(
    spawn: Callable[..., Daemon], url: str, tmp_path: Path
) -> None:
    """A bad table at start: exit 78 (EX_CONFIG) and the log names file:line."""
    config = write_table(
        tmp_path, "version: 1\nsources: [ingress]\nroutes:\n  - name: a\n    match: x\n    tos: y\n"
    )
    daemon = spawn(*router_args(url, config))
    assert daemon.proc.wait(30) == 78
    daemon._reader.join(5)
    errors = daemon.event("config_invalid")["errors"]
    assert any(e.startswith(f"{config}:6: unknown key 'tos'") for e in errors), errors


def test_metrics_port_in_use_exits_1(
    spawn: Callable[..., Daemon], url: str, r: redis.Redis
) -> None:
    """A metrics address already taken is reported and the daemon exits 1 (not a hang)."""
    first = spawn(*router_args(url))
    first.wait_ready()
    second = spawn(*router_args(url)[:-4], "--metrics-addr", f"127.0.0.1:{first.port}")
    assert second.proc.wait(30) == 1
    assert second.event("metrics_port_unavailable")
    assert first.stop(signal.SIGTERM) == 0


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
    spawn: Callable[..., Daemon], tmp_path: Path, r: redis.Redis
) -> None:
    """With no URL: an embedded server in --state-dir, its URL in redis.url, stopped on exit."""
    state = tmp_path / "state"
    daemon = spawn(*router_args(None, None, "--state-dir", str(state)))
    started = daemon.event("embedded_server_started")
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
        assert daemon.stop(signal.SIGTERM) == 0
        wait_sync(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), 10, "server gone")
        assert not url_file.exists()
        with pytest.raises(redis.ConnectionError):
            local.ping()
        assert daemon.event("embedded_server_stopped")
    finally:
        local.close()
    assert xlen(r, "model-events") == 0  # the suite's server was never touched


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_bin_run_routes_the_readme_example(spawn: Callable[..., Daemon], tmp_path: Path) -> None:
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
    url = daemon.event("embedded_server_started", timeout_s=90)["url"]
    daemon.wait_ready()
    assert daemon.event("router_starting")["config"] == "config/routes.yaml"
    local = redis.Redis.from_url(url)
    try:
        route_readme_example(local)
    finally:
        local.close()
    assert daemon.stop(signal.SIGINT) == 0
    assert not (state / "redis.url").exists()


def test_second_router_on_a_state_dir_leaves_the_first_alone(
    spawn: Callable[..., Daemon], tmp_path: Path
) -> None:
    """A second start on the same state folder says "already running (pid N)" and exits 75."""
    state = tmp_path / "state"
    first = spawn(*router_args(None, None, "--state-dir", str(state)))
    url = first.event("embedded_server_started")["url"]
    first.wait_ready()
    server_pid = (state / "server.pid").read_text()
    before = {p.name: p.stat().st_mtime_ns for p in state.iterdir()}
    second = spawn(*router_args(None, None, "--state-dir", str(state)))
    assert second.proc.wait(60) == 75
    failed = second.event("router_failed")
    assert f"already running (pid {first.proc.pid})" in failed["error"]
    assert not [e for e in second.events if e.get("event") == "stale_embedded_server"]
    assert {p.name: p.stat().st_mtime_ns for p in state.iterdir()} == before  # nothing touched
    assert (state / "server.pid").read_text() == server_pid
    local = redis.Redis.from_url(url)
    try:
        assert local.ping()  # the first one's server is alive, and so is the first router
        route_readme_example(local)
    finally:
        local.close()
    first.wait_ready()
    assert first.stop(signal.SIGTERM) == 0
    third = spawn(*router_args(None, None, "--state-dir", str(state)))  # the lock went with it
    third.wait_ready()
    assert third.stop(signal.SIGTERM) == 0


def test_stale_server_of_a_killed_router_is_stopped_but_no_stranger(
    spawn: Callable[..., Daemon], tmp_path: Path
) -> None:
    """After SIGKILL the next router stops the orphaned server; a reused pid is never signalled."""
    state = tmp_path / "state"
    first = spawn(*router_args(None, None, "--state-dir", str(state)))
    first.wait_ready()
    orphan = int((state / "server.pid").read_text())
    first.proc.kill()
    first.proc.wait(10)
    second = spawn(*router_args(None, None, "--state-dir", str(state)))
    assert second.event("stale_embedded_server")["pid"] == orphan
    second.wait_ready()
    assert second.stop(signal.SIGTERM) == 0
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)", "fake-server"]
    stranger = subprocess.Popen(sleeper, cwd=tmp_path)  # "server" in its cmdline, not ours
    try:
        (state / "server.pid").write_text(f"{stranger.pid}\n")
        third = spawn(*router_args(None, None, "--state-dir", str(state)))
        third.wait_ready()
        assert stranger.poll() is None
        assert third.stop(signal.SIGTERM) == 0
    finally:
        stranger.kill()
        stranger.wait(10)
