"""Redis away: the router never exits, reports not ready, backs off (no hot loop), comes back."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from synapse.embedded import EmbeddedServer, free_port
from tests.reliability.harness import write_routes
from tests.support.polling import wait_sync
from tests.support.router import RouterProcess


class ClosingListener(threading.Thread):
    """A TCP port that accepts and at once closes every connection, counting them."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()
        self.sock.close()


def test_peer_closing_every_connection_is_retried_with_backoff(
    tmp_path: Path, routers: Callable[..., RouterProcess]
) -> None:
    """A server that drops every connection gets a handful of attempts in 4 s, not a hot loop."""
    config, _ = write_routes(tmp_path / "cfg")
    listener = ClosingListener()
    listener.start()
    try:
        router = routers(config, f"redis://127.0.0.1:{listener.port}/0").start(wait_ready=False)
        wait_sync(lambda: listener.accepted >= 1, 10, "a first connection attempt")
        first = listener.accepted
        time.sleep(4.0)  # the observation window: attempts are counted over it
        attempts = listener.accepted - first
        assert router.alive()
        assert router.readyz() == 503
        errors = router.metric("synapse_redis_errors_total", kind="connection")
    finally:
        listener.done.set()
    print(f"BACKOFF attempts_in_4s={attempts} errors_metric={errors}")
    # Capped exponential backoff (0.05 s doubling to 5 s, full jitter) allows ~7 in 4 s.
    assert 1 <= attempts <= 16, attempts
    assert errors >= 1


@pytest.mark.slow
def test_redis_down_at_start_and_killed_later_router_waits_and_resumes(
    tmp_path: Path, routers: Callable[..., RouterProcess]
) -> None:
    """Down at start: alive and not ready; up: ready by itself; killed: not ready; back: ready."""
    config, _ = write_routes(tmp_path / "cfg")
    server = EmbeddedServer(data_dir=tmp_path / "redis", port=free_port(), appendfsync="always")
    router = routers(config, server.url).start(wait_ready=False)
    try:
        wait_sync(lambda: router.readyz() == 503, 10, "not ready with no server")
        assert router.get("/healthz")[0] == 200  # alive all the same
        router.wait_metric("synapse_redis_up", lambda v: v == 0)
        server.start()
        wait_sync(lambda: router.readyz() == 200, 15, "ready once the server is up")
        router.wait_metric("synapse_redis_up", lambda v: v == 1)
        server.kill()
        wait_sync(lambda: router.readyz() == 503, 10, "not ready after the server died")
        router.wait_metric("synapse_redis_up", lambda v: v == 0)
        server.start()
        wait_sync(lambda: router.readyz() == 200, 15, "ready again by itself")
        assert router.alive()
        assert router.events("redis_unavailable")
    finally:
        server.stop()
