"""The one port under abuse: only GET, slow and oversized requests cut off, routing unharmed."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from synapse.port import MAX_CONNECTIONS, MAX_REQUEST_BYTES, READ_TIMEOUT_S
from tests.conftest import wait_sync, write_table
from tests.ops.test_reload import EV_SCHEMA, TABLE_A, all_acked, send
from tests.support.router import RouterProcess


@pytest.fixture
def router(tmp_path: Path, spawn: Callable[..., RouterProcess]) -> Iterator[RouterProcess]:
    proc = spawn(write_table(tmp_path / "cfg", TABLE_A, {"ev.json": EV_SCHEMA}))
    proc.wait_ready()
    yield proc
    assert proc.stop() == 0


def raw(port: int, data: bytes, timeout_s: float = 10.0) -> bytes:
    """Send ``data``, read the whole reply until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("request_line", "expected"),
    [
        (b"POST /metrics HTTP/1.1", 405),
        (b"PUT /readyz HTTP/1.1", 405),
        (b"DELETE /healthz HTTP/1.1", 405),
        (b"OPTIONS /metrics HTTP/1.1", 405),
        (b"HEAD /metrics HTTP/1.1", 200),
        (b"GET /debug HTTP/1.1", 404),
        (b"GET /../etc/passwd HTTP/1.1", 404),
        (b"\x16\x03\x01\x02\x00", 400),  # a TLS hello on the plain port
        (b"GET /metrics", 400),
    ],
)
def test_only_get_on_three_paths(router: RouterProcess, request_line: bytes, expected: int) -> None:
    """Anything but GET/HEAD on /metrics, /healthz, /readyz is refused with a 4xx and closed."""
    assert status_of(raw(router.port, request_line + b"\r\nHost: x\r\n\r\n")) == expected


def test_oversized_request_refused_at_once(router: RouterProcess) -> None:
    """A head larger than the cap gets 431 without waiting for the read timeout."""
    started = time.monotonic()
    reply = raw(router.port, b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * (4 * MAX_REQUEST_BYTES))
    assert status_of(reply) == 431
    assert time.monotonic() - started < READ_TIMEOUT_S


def test_slow_client_cut_off_after_read_timeout(router: RouterProcess) -> None:
    """A client that never finishes its request is answered 408 and closed after the timeout."""
    with socket.create_connection(("127.0.0.1", router.port), timeout=READ_TIMEOUT_S + 10) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost:")  # ... and nothing more
        assert router.get("/healthz")[0] == 200  # others are served meanwhile
        reply = sock.recv(65536)
        waited = time.monotonic() - started
    assert status_of(reply) == 408
    assert READ_TIMEOUT_S - 0.5 <= waited < READ_TIMEOUT_S + 5


def idle_connections(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"G")  # a request that never ends
        socks.append(sock)
    return socks


def closed_by_server(socks: list[socket.socket], timeout_s: float) -> int:
    """How many of ``socks`` the server closed (EOF or reset) within ``timeout_s``."""
    closed: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        live = [s for s in socks if s.fileno() not in closed]
        readable, _, _ = select.select(live, [], [], 0.1)
        for sock in readable:
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                closed.add(sock.fileno())
        if len(closed) >= len(socks) - MAX_CONNECTIONS:
            break
    return len(closed)


def test_connections_bounded_and_routing_unharmed(router: RouterProcess, r: redis.Redis) -> None:
    """200 stalled connections plus garbage and scrape floods: connections capped, events routed."""
    stop = threading.Event()
    port = router.port

    def garbage() -> None:
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                    sock.sendall(os.urandom(512) + b"\r\n\r\n")
                    sock.recv(1024)
            except OSError:
                pass

    def scrape() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                raw(port, b"GET /metrics HTTP/1.1\r\n\r\n", timeout_s=2)

    held = idle_connections(port, 200)
    workers = [threading.Thread(target=f, daemon=True) for f in (garbage, garbage, scrape, scrape)]
    try:
        assert closed_by_server(held, timeout_s=5) >= len(held) - MAX_CONNECTIONS
        for worker in workers:
            worker.start()
        started = time.monotonic()
        for _ in range(10):
            send(r, 100)
        wait_sync(lambda: all_acked(r), timeout_s=10, what="1000 events routed under abuse")
        elapsed = time.monotonic() - started
        assert r.xlen("x") == 1000 and r.xlen("y") == 1000
        print(f"1000 events routed in {elapsed:.2f}s under port abuse")
    finally:
        stop.set()
        for worker in workers:
            if worker.is_alive():
                worker.join(5)
        for sock in held:
            sock.close()
    wait_sync(lambda: serves(router), what="port serving again")


def serves(router: RouterProcess) -> bool:
    """/healthz answers 200 (a refused connection, while slots are full, is a no)."""
    try:
        return router.get("/healthz")[0] == 200
    except OSError:
        return False
