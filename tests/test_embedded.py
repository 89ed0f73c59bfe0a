"""The bundled server: start, ping, data in its folder, stop, kill, failures reported."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest
import redis

from synapse.embedded import EmbeddedServer, free_port, server_binary
from synapse.errors import SynapseError
from tests.conftest import wait_sync


def test_start_ping_stop(tmp_path: Path) -> None:
    """start() serves on 127.0.0.1 at .url with data in data_dir; stop() ends the process."""
    server = EmbeddedServer(data_dir=tmp_path / "data")
    with server:
        assert server.port > 0
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert server.ping()
        client = redis.Redis.from_url(server.url)
        try:
            assert client.config_get("bind")["bind"] == "127.0.0.1"
            assert client.config_get("appendonly")["appendonly"] == "yes"
            assert Path(client.config_get("dir")["dir"]) == (tmp_path / "data").resolve()
        finally:
            client.close()
    assert server.process is not None and server.process.poll() is not None
    assert not server.ping()
    assert (tmp_path / "data" / "server.log").exists()
    server.stop()  # stopping twice is harmless


def test_data_survives_restart_via_aof(tmp_path: Path) -> None:
    """Writes acknowledged with fsync always survive a SIGKILL and a restart on the same folder."""
    port = free_port()
    server = EmbeddedServer(data_dir=tmp_path, port=port, appendfsync="always").start()
    client = redis.Redis.from_url(server.url)
    try:
        client.xadd("s", {"k": "v"})
        server.kill()
        assert not server.ping()
        server.start()
        assert client.xlen("s") == 1
    finally:
        client.close()
        server.stop()


def test_signal_stop_and_continue(tmp_path: Path) -> None:
    """signal() reaches the server: SIGSTOP freezes it, and stop() still ends it (SIGCONT first)."""
    server = EmbeddedServer(data_dir=tmp_path).start()
    try:
        server.signal(signal.SIGSTOP)
        wait_sync(lambda: not server.ping(), 5, "server frozen")
    finally:
        server.stop(timeout_s=10)
    assert server.process is not None and server.process.poll() is not None


def test_start_failure_is_reported_with_the_log(tmp_path: Path) -> None:
    """A server that exits at start raises SynapseError quoting its log."""
    server = EmbeddedServer(data_dir=tmp_path, extra_args=("--no-such-option", "x"))
    with pytest.raises(SynapseError) as caught:
        server.start(timeout_s=10)
    assert "server exited" in str(caught.value)


def test_busy_port_is_reported(tmp_path: Path) -> None:
    """A port already served by another server makes start() fail, never adopt that server."""
    first = EmbeddedServer(data_dir=tmp_path / "a").start()
    try:
        second = EmbeddedServer(data_dir=tmp_path / "b", port=first.port)
        with pytest.raises(SynapseError):
            second.start(timeout_s=10)
        second.stop()
        assert first.ping()
    finally:
        first.stop()


def test_server_binary_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """$SYNAPSE_SERVER names the binary; an unknown one is an error, unset is the bundled one."""
    monkeypatch.setenv("SYNAPSE_SERVER", "no-such-server-binary-xyz")
    with pytest.raises(SynapseError, match="not on PATH"):
        server_binary()
    monkeypatch.delenv("SYNAPSE_SERVER")
    assert Path(server_binary()).exists()


def test_free_port_is_bindable() -> None:
    """free_port returns a port that can be bound on 127.0.0.1 right now."""
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        assert sock.getsockname()[1] == port
