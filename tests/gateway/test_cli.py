"""The `synapse-gateway` command: flags, URL discovery, token secrecy, signals, readiness."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import redis

from synapse.embedded import free_port
from tests.gateway.conftest import base_url, serving
from tests.gateway.process import GATEWAY, GatewayProcess
from tests.gateway.sse import status_of


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """(status, first bytes) of a GET; reads only what is there (SSE never ends)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read1(4096)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_token_is_never_logged_and_sigterm_exits_0(tmp_path: Path, url: str) -> None:
    """A debug-level run that served and refused tokened requests never prints the token."""
    token = "tok-3f9a1c-never-in-logs"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    gw = GatewayProcess(
        ["--url", url, "--listen", f"127.0.0.1:{port}", "--token-file", str(token_file)],
        tmp_path / "gateway.log",
        env={"SYNAPSE_LOG_LEVEL": "debug"},
    )
    try:
        gw.wait_ready(base)
        assert fetch(f"{base}/events?stream=a&token={token}")[0] == 200
        assert fetch(f"{base}/events?stream=a", {"Authorization": f"Bearer {token}"})[0] == 200
        assert fetch(f"{base}/events?stream=a&token=wrong-{token}")[0] == 401
        assert fetch(f"{base}/?token={token}")[0] == 200
    finally:
        code = gw.stop()
    log = gw.log()
    assert code == 0, log
    assert token not in log
    events = [json.loads(line)["event"] for line in log.splitlines() if line.startswith("{")]
    assert "gateway_started" in events and "gateway_stopped" in events
    assert "client_connected" in events  # debug lines were written, and hold no token


def test_url_comes_from_the_state_folder_like_the_cli(tmp_path: Path, url: str) -> None:
    """With no --url or SYNAPSE_URL, <state-dir>/redis.url (what bin/run writes) is used."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "redis.url").write_text(url + "\n")
    port = free_port()
    gw = GatewayProcess(
        ["--listen", f"127.0.0.1:{port}"],
        tmp_path / "gateway.log",
        env={"SYNAPSE_STATE_DIR": str(state)},
    )
    try:
        gw.wait_ready(f"http://127.0.0.1:{port}")
        client = redis.Redis.from_url(url)
        names = [c["name"] for c in client.client_list()]
        client.close()
        assert "synapse-gateway:reader" in names
    finally:
        assert gw.stop() == 0


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SYNAPSE_")}
    done = subprocess.run(
        [GATEWAY, *args], cwd=cwd, env={**base, **(env or {})}, capture_output=True, timeout=60
    )
    return done.returncode, done.stderr.decode()


def test_bad_invocations_exit_2_with_a_reason(tmp_path: Path) -> None:
    """No URL anywhere, an empty token file, a malformed kafka:// URL, a bad --listen: exit 2,
    one line."""
    code, err = run_cli([], tmp_path)
    assert code == 2 and "no Redis URL" in err and "bin/run" in err
    empty = tmp_path / "empty"
    empty.write_text("\n")
    code, err = run_cli(["--url", "redis://x", "--token-file", str(empty)], tmp_path)
    assert code == 2 and "is empty" in err
    code, err = run_cli(["--url", "kafka://h:1?acks=0"], tmp_path)
    assert code == 2 and "no path, query" in err
    code, err = run_cli(["--url", "redis://x", "--listen", "nowhere"], tmp_path)
    assert code == 2 and "HOST:PORT" in err


def test_listen_port_in_use_exits_1(tmp_path: Path, url: str) -> None:
    """A taken port is a clear error and exit 1, not a hang."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = run_cli(["--url", url, "--listen", f"127.0.0.1:{port}"], tmp_path)
    assert code == 1 and "gateway_listen_failed" in err


async def test_readyz_says_503_while_redis_is_unreachable() -> None:
    """Health stays 200 (the process is alive), readiness is 503 until Redis answers."""
    dead = f"redis://127.0.0.1:{free_port()}"
    async with serving(dead) as gw:
        base = base_url(gw)
        assert (await status_of(f"{base}/healthz"))[0] == 200
        status, body, _ = await status_of(f"{base}/readyz")
        assert status == 503 and "Redis" in body
        status, _, _ = await status_of(f"{base}/nope")
        assert status == 404


def test_systemd_credential_and_environment_configure_the_gateway(tmp_path: Path, url: str) -> None:
    """$CREDENTIALS_DIRECTORY/gateway-token, SYNAPSE_GATEWAY_STREAMS and _ALLOW_ORIGIN apply."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "gateway-token").write_text("cred-token\n")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    gw = GatewayProcess(
        ["--url", url],
        tmp_path / "gateway.log",
        env={
            "CREDENTIALS_DIRECTORY": str(creds),
            "SYNAPSE_GATEWAY_LISTEN": f"127.0.0.1:{port}",
            "SYNAPSE_GATEWAY_STREAMS": "public-*",
            "SYNAPSE_GATEWAY_ALLOW_ORIGIN": "https://a.example https://b.example",
        },
    )
    try:
        gw.wait_ready(base)
        assert fetch(f"{base}/events?stream=public-x")[0] == 401
        assert fetch(f"{base}/events?stream=private&token=cred-token")[0] == 403
        request = urllib.request.Request(
            f"{base}/events?stream=public-x&token=cred-token",
            headers={"Origin": "https://b.example"},
        )
        with urllib.request.urlopen(request, timeout=5) as r:
            assert r.headers["Access-Control-Allow-Origin"] == "https://b.example"
    finally:
        assert gw.stop() == 0
