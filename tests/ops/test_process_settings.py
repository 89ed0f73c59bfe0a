"""Process settings from hostile or unusual input: IPv6 metrics address, passwords on argv."""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import click
import pytest
import redis

from synapse import settings
from synapse.embedded import EmbeddedServer
from tests.conftest import write_table
from tests.ops.test_reload import EV_SCHEMA, TABLE_A
from tests.support.router import RouterProcess, script


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("[::1]:9464", ("::1", 9464)),
        ("[fe80::1]:1", ("fe80::1", 1)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        (":9464", ("127.0.0.1", 9464)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_host_port_accepts_ipv6_literals(value: str, expected: tuple[str, int]) -> None:
    """HOST:PORT with an IPv6 literal in brackets splits into the bare address and the port."""
    assert settings.host_port(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [("::1:9464", "in brackets"), ("[nope]:1", "not an IPv6"), ("[::1]", "not HOST:PORT")],
)
def test_host_port_refuses_ambiguous_ipv6(value: str, message: str) -> None:
    """An IPv6 address without brackets, or a bracketed non-address, is a clear error."""
    with pytest.raises(ValueError, match=message):
        settings.host_port(value)


def test_bare_ipv6_metrics_addr_is_a_usage_error(tmp_path: Path) -> None:
    """`--metrics-addr ::1:9464` exits 2 saying to use brackets (never a traceback)."""
    done = subprocess.run(
        [script("synapse-router"), "--metrics-addr", "::1:9464"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == click.UsageError.exit_code
    assert "[::1]:9464" in done.stderr


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_metrics_served_on_ipv6_loopback(
    tmp_path: Path, spawn: Callable[..., RouterProcess]
) -> None:
    """`--metrics-addr [::1]:0` binds ::1 and /metrics is scraped over IPv6."""
    config = write_table(tmp_path / "cfg", TABLE_A, {"ev.json": EV_SCHEMA})
    router = spawn(config, extra=("--metrics-addr", "[::1]:0"))
    start = router.wait_log("router_starting")
    assert start["metrics"] == f"http://[::1]:{router.port}/metrics"
    with urllib.request.urlopen(f"http://[::1]:{router.port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert b"synapse_config_info" in resp.read()
    assert router.stop() == 0


def test_password_in_redis_url_flag_is_warned_about(
    tmp_path: Path, spawn: Callable[..., RouterProcess], url: str
) -> None:
    """A password in --redis-url on argv: a warning naming the env var and credential file."""
    srv = EmbeddedServer(data_dir=tmp_path / "auth").start()
    setup = redis.Redis.from_url(srv.url)
    setup.config_set("requirepass", "argv-pw")
    setup.close()
    try:
        config = write_table(tmp_path / "cfg", TABLE_A, {"ev.json": EV_SCHEMA})
        with_pw = srv.url.replace("redis://", "redis://:argv-pw@")
        router = spawn(config, redis_url=with_pw)
        warning = router.wait_log("redis_password_on_command_line")
        assert warning["level"] == "warning"
        assert "SYNAPSE_URL" in warning["hint"]
        assert "SYNAPSE_REDIS_PASSWORD_FILE" in warning["hint"]
        router.wait_ready()
        assert router.stop() == 0
        assert not any("argv-pw" in line for line in router.raw)
        quiet = spawn(config, redis_url=None, env={"SYNAPSE_REDIS_URL": with_pw})
        quiet.wait_ready()
        assert quiet.stop() == 0
        assert not quiet.events("redis_password_on_command_line")  # from the environment: fine
    finally:
        srv.stop()


def test_password_from_a_file_named_by_the_environment(
    tmp_path: Path, spawn: Callable[..., RouterProcess]
) -> None:
    """SYNAPSE_REDIS_PASSWORD_FILE: the password is read from that file (bounded), not argv."""
    srv = EmbeddedServer(data_dir=tmp_path / "auth").start()
    setup = redis.Redis.from_url(srv.url)
    setup.config_set("requirepass", "file-pw")
    setup.close()
    try:
        secret = tmp_path / "redis-password"
        secret.write_text("file-pw\n")
        os.chmod(secret, 0o600)
        config = write_table(tmp_path / "cfg", TABLE_A, {"ev.json": EV_SCHEMA})
        router = spawn(config, redis_url=srv.url, env={"SYNAPSE_REDIS_PASSWORD_FILE": str(secret)})
        router.wait_ready()
        assert router.stop() == 0
        assert not router.events("redis_password_on_command_line")
    finally:
        srv.stop()


def test_cli_warns_about_a_password_in_its_redis_url_flag(url: str) -> None:
    """`synapse streams --redis-url redis://:pw@...` warns on stderr (output unchanged)."""
    with_pw = url.replace("redis://", "redis://:unused-pw@")
    done = subprocess.run(
        [script("synapse"), "streams", "--redis-url", with_pw],
        capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("SYNAPSE_")},
    )  # fmt: skip
    assert "visible to every user in ps" in done.stderr
    assert "unused-pw" not in done.stderr
