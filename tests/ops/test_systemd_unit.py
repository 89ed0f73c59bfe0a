"""systemd/synapse-router.service: verified and rated by systemd-analyze, wired to the daemon."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from synapse.backends.redis import COMMIT_TIMEOUT_S
from synapse.backoff import Backoff
from synapse.embedded import EmbeddedServer
from synapse.routercli import EXIT_CONFIG
from tests.conftest import ROOT, write_table
from tests.ops.conftest import need_tool
from tests.ops.test_reload import EV_SCHEMA, TABLE_A
from tests.support.router import RouterProcess, script

UNIT = ROOT / "systemd" / "synapse-router.service"
#: Every shipped unit: each is verified and rated the same way.
UNITS = [UNIT, ROOT / "systemd" / "synapse-gateway.service"]
MAX_EXPOSURE = 2.0


def service_settings() -> dict[str, list[str]]:
    """The [Service] section as key -> every value given (keys may repeat)."""
    found: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            name, _, value = line.partition("=")
            found.setdefault(name, []).append(value)
    return found


def installed_copy(tmp_path: Path, unit: Path = UNIT) -> Path:
    """The unit with /opt/synapse/bin pointing at this venv, so its commands exist."""
    target = tmp_path / unit.name
    target.write_text(
        unit.read_text().replace("/opt/synapse/bin", str(Path(sys.executable).parent))
    )
    return target


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.stem)
def test_unit_passes_systemd_analyze_verify(tmp_path: Path, unit: Path) -> None:
    """`systemd-analyze verify` accepts each shipped unit with no warning at all."""
    tool = need_tool("systemd-analyze")
    done = subprocess.run(
        [tool, "verify", str(installed_copy(tmp_path, unit))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (done.stdout + done.stderr).strip() == ""


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.stem)
def test_unit_exposure_at_most_two(tmp_path: Path, unit: Path) -> None:
    """`systemd-analyze security --offline=yes` rates each shipped unit's exposure <= 2.0."""
    tool = need_tool("systemd-analyze")
    done = subprocess.run(
        [tool, "security", "--offline=yes", "--no-pager", str(installed_copy(tmp_path, unit))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert found, done.stdout + done.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, done.stdout


def test_unit_lifecycle_settings() -> None:
    """Type=notify, SIGHUP reload, restart policy, watchdog, state, secrets."""
    s = service_settings()
    assert s["Type"] == ["notify"]
    assert s["ExecStart"][0].split()[0].endswith("/synapse-router")
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["Restart"] == ["on-failure"]
    assert s["RestartPreventExitStatus"] == [str(EXIT_CONFIG)]
    assert s["StateDirectory"] == ["synapse"]
    assert s["EnvironmentFile"] == ["-/etc/synapse/synapse-router.env"]
    assert s["LoadCredential"][0].startswith("redis-password:")
    watchdog_s = int(s["WatchdogSec"][0].removesuffix("s"))
    # The slowest normal gap between progress pings: a commit timing out, then a backoff.
    assert watchdog_s > COMMIT_TIMEOUT_S + Backoff().cap_s
    for key, value in {
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "CapabilityBoundingSet": "",
        "PrivateDevices": "yes",
        "ProtectHome": "yes",
        "MemoryDenyWriteExecute": "yes",
    }.items():
        assert s[key] == [value], key
    assert "@system-service" in s["SystemCallFilter"]


def test_bad_table_under_systemd_is_not_restarted(tmp_path: Path) -> None:
    """Every command the unit starts exits with a RestartPreventExitStatus= code on a bad table.

    systemd compares RestartPreventExitStatus= with the main process's status only: an
    ExecStartPre= that fails is restarted for ever, so the unit has none, and ExecStart=
    itself (the daemon) exits 78 with config_invalid. `synapse check` still exits 1.
    """
    s = service_settings()
    assert "ExecStartPre" not in s and "ExecStartPost" not in s
    prevent = {int(code) for v in s["RestartPreventExitStatus"] for code in v.split()}
    config = write_table(tmp_path / "cfg", "version: 1\nsources: [ingress\n")
    unit_command = s["ExecStart"][0].replace("/opt/synapse/bin", str(Path(sys.executable).parent))
    args = unit_command.replace("${SYNAPSE_CONFIG}", str(config)).split()
    daemon = subprocess.run(
        [*args, "--redis-url", "redis://127.0.0.1:1", "--metrics-addr", "127.0.0.1:0"],
        capture_output=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "SYNAPSE_LOG_FORMAT": "json"},
    )
    assert daemon.returncode == EXIT_CONFIG and daemon.returncode in prevent, daemon.stderr
    assert b'"config_invalid"' in daemon.stderr
    check = subprocess.run(
        [script("synapse"), "check", "--config", str(config)], capture_output=True, timeout=60
    )
    assert check.returncode == 1 and b"routes.yaml:" in check.stderr


def test_password_from_systemd_credential(
    tmp_path: Path, spawn: Callable[..., RouterProcess]
) -> None:
    """$CREDENTIALS_DIRECTORY/redis-password authenticates the router and is never logged."""
    srv = EmbeddedServer(data_dir=tmp_path / "auth").start()
    setup = redis.Redis.from_url(srv.url)
    setup.config_set("requirepass", "s3cret-pw")  # after start: its ping is unauthenticated
    setup.close()
    try:
        creds = tmp_path / "creds"
        creds.mkdir()
        (creds / "redis-password").write_text("s3cret-pw\n")
        config = write_table(tmp_path / "cfg", TABLE_A, {"ev.json": EV_SCHEMA})
        router = spawn(config, redis_url=srv.url, env={"CREDENTIALS_DIRECTORY": str(creds)})
        router.wait_ready()
        client = redis.Redis.from_url(srv.url, password="s3cret-pw")
        try:
            assert client.xinfo_groups("ingress")[0]["name"] == b"synapse-router"
        finally:
            client.close()
        assert router.stop() == 0
        assert not any("s3cret-pw" in line for line in router.raw)
    finally:
        srv.stop()
