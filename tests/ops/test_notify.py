"""sd_notify with the real daemon, read from a real unix datagram socket."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from synapse.embedded import EmbeddedServer, free_port
from tests.conftest import write_table
from tests.ops.test_reload import EV_SCHEMA, TABLE_A, TABLE_B, dedent, write_atomic
from tests.support.polling import wait_sync
from tests.support.router import RouterProcess


class NotifySocket:
    """A bound AF_UNIX datagram socket standing in for systemd's ``$NOTIFY_SOCKET``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []

    def poll(self) -> list[dict[str, str]]:
        """Every datagram received so far, each as a dict of its KEY=VALUE lines."""
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            self.messages.append(fields)

    def wait(
        self, what: Callable[[dict[str, str]], bool], timeout_s: float = 15.0, after: int = 0
    ) -> int:
        """Index of the first message at or past ``after`` that satisfies ``what``."""
        found: list[int] = []

        def seen() -> bool:
            found[:] = [i for i, msg in enumerate(self.poll()[after:], after) if what(msg)][:1]
            return bool(found)

        wait_sync(seen, timeout_s, lambda: f"a notify message; got {self.messages}", step_s=0.01)
        return found[0]

    def lifecycle(self) -> list[str]:
        """The state messages in order (WATCHDOG and STATUS-only ones left out)."""
        keys = ("READY", "RELOADING", "STOPPING")
        return [k for m in self.poll() for k in keys if m.get(k) == "1"]


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.sock.close()


@pytest.fixture
def late_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A server of our own on a free port, not started yet."""
    srv = EmbeddedServer(data_dir=tmp_path / "late", port=free_port())
    yield srv
    srv.stop()


def test_notify_order_ready_reload_stopping(
    tmp_path: Path,
    notify: NotifySocket,
    late_server: EmbeddedServer,
    spawn: Callable[..., RouterProcess],
) -> None:
    """READY=1 only once Redis answers and groups exist; RELOADING/READY per reload; STOPPING."""
    config = write_table(tmp_path / "cfg", TABLE_A, {"ev.json": EV_SCHEMA})
    router = spawn(config, redis_url=late_server.url, env={"NOTIFY_SOCKET": str(notify.path)})
    router.wait_log("redis_unavailable")
    assert "1" not in [m.get("READY") for m in notify.poll()]
    assert not router.ready()
    late_server.start()
    ready = notify.wait(lambda m: m.get("READY") == "1", timeout_s=20)
    client = redis.Redis.from_url(late_server.url)
    try:  # groups already exist when READY=1 arrives
        assert [g["name"] for g in client.xinfo_groups("ingress")] == [b"synapse-router"]
    finally:
        client.close()
    assert notify.messages[ready]["STATUS"].startswith("routing")

    write_atomic(config, dedent(TABLE_B))
    router.signal(signal.SIGHUP)
    reloading = notify.wait(lambda m: m.get("RELOADING") == "1", after=ready + 1)
    usec = int(notify.messages[reloading]["MONOTONIC_USEC"])
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert 0 <= now - usec < 10_000_000  # CLOCK_MONOTONIC, microseconds
    back = notify.wait(lambda m: m.get("READY") == "1", after=reloading + 1)
    assert "reloaded" in notify.messages[back]["STATUS"]

    write_atomic(config, "version: 1\nsources: [ingress\n")
    router.signal(signal.SIGHUP)
    failing = notify.wait(lambda m: m.get("RELOADING") == "1", after=back + 1)
    kept = notify.wait(lambda m: m.get("READY") == "1", after=failing + 1)
    status = notify.messages[kept]["STATUS"]
    assert (
        status.startswith("reload failed, old table kept")
        and "routes.yaml:3: invalid YAML" in status
    )

    router.signal(signal.SIGTERM)
    assert router.process.wait(30) == 0
    notify.wait(lambda m: m.get("STOPPING") == "1", after=kept + 1)
    assert notify.lifecycle() == ["READY", "RELOADING", "READY", "RELOADING", "READY", "STOPPING"]


def watchdogs(notify: NotifySocket) -> int:
    return sum(1 for m in notify.poll() if m.get("WATCHDOG") == "1")


def test_watchdog_only_while_loop_progresses(
    tmp_path: Path,
    notify: NotifySocket,
    late_server: EmbeddedServer,
    spawn: Callable[..., RouterProcess],
) -> None:
    """WATCHDOG=1 every half WATCHDOG_USEC while idle; none while the loop is wedged."""
    late_server.start()
    config = write_table(tmp_path / "cfg", TABLE_A, {"ev.json": EV_SCHEMA})
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "300000"}
    router = spawn(config, redis_url=late_server.url, env=env)
    router.wait_ready()
    notify.wait(lambda m: m.get("READY") == "1")
    start = watchdogs(notify)
    # idle-waiting normally still pings
    wait_sync(lambda: watchdogs(notify) >= start + 4, 10, "watchdog pings while idle")
    late_server.signal(signal.SIGSTOP)  # the read in flight now hangs: the loop is wedged
    try:
        time.sleep(0.5)  # let a read that was already answered finish its turn
        wedged = watchdogs(notify)
        time.sleep(1.5)  # five watchdog periods: systemd would have fired by now
        assert watchdogs(notify) == wedged, "watchdog kept pinging from a wedged loop"
    finally:
        late_server.signal(signal.SIGCONT)
    wait_sync(lambda: watchdogs(notify) > wedged, 15, "watchdog pings after the loop recovered")
    assert router.stop() == 0
