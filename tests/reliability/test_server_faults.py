"""The server crashes, stalls, comes back empty: the router rides it out, nothing lost or twice."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from synapse.config import RoutingTable
from synapse.embedded import EmbeddedServer
from tests.reliability.conftest import producer_client
from tests.reliability.harness import (
    DESTINATIONS,
    DLQ,
    GROUP,
    RouterProcess,
    mixed,
    wait_until,
    write_routes,
)
from tests.reliability.ledger import Ledger, check, produce, wait_quiescent


class Producer(threading.Thread):
    """Produces ``n`` events in small chunks, carrying on through server outages."""

    def __init__(self, url: str, table: RoutingTable, n: int, chunk: int = 100) -> None:
        super().__init__(daemon=True)
        self.url, self.table, self.n, self.chunk = url, table, n, chunk
        self.ledger = Ledger()
        self.failed_chunks = 0

    def run(self) -> None:
        client = producer_client(self.url)
        events = list(mixed(self.table, self.n, seed=3))
        for i in range(0, self.n, self.chunk):
            try:
                produce(client, self.ledger, "ingress", events[i : i + self.chunk])
            except (redis.ConnectionError, redis.TimeoutError):
                self.failed_chunks += 1  # attempted, not acknowledged
                time.sleep(0.05)
            time.sleep(0.002)
        client.close()

    def wait_acked(self, count: int, timeout_s: float = 30) -> None:
        wait_until(lambda: len(self.ledger.acked) >= count, timeout_s, f"{count} events acked")

    def finish(self, timeout_s: float = 90) -> Ledger:
        self.join(timeout_s)
        assert not self.is_alive(), "producer stuck"
        return self.ledger


@pytest.mark.slow
def test_server_kill9_with_appendfsync_always_loses_nothing(
    tmp_path: Path,
    own_server: EmbeddedServer,
    client: redis.Redis,
    routers: Callable[..., RouterProcess],
) -> None:
    """kill -9 of the server mid-run, restarted on its AOF: every acknowledged event routed once."""
    config, table = write_routes(tmp_path / "cfg")
    router = routers(config, own_server.url).start()
    producer = Producer(own_server.url, table, 20_000)
    producer.start()
    producer.wait_acked(6_000)
    own_server.kill()
    wait_until(lambda: router.readyz() == 503, 10, "not ready while the server is down")
    router.wait_metric("synapse_redis_up", lambda v: v == 0)
    own_server.start()  # same port, same data folder: the AOF is replayed
    ledger = producer.finish()
    wait_until(lambda: router.readyz() == 200, 20, "ready again by itself")
    wait_quiescent(client, ["ingress"], GROUP, timeout_s=60)
    report = check(client, ledger, DESTINATIONS, DLQ)
    print(report.line("server_kill9_aof_always"), f"failed_chunks={producer.failed_chunks}")
    assert report.clean, report.examples
    assert report.events >= 15_000
    assert router.alive() and router.events("redis_unavailable")


@pytest.mark.slow
def test_server_stalled_then_resumed(
    tmp_path: Path,
    own_server: EmbeddedServer,
    client: redis.Redis,
    routers: Callable[..., RouterProcess],
) -> None:
    """SIGSTOP of the server mid-flow, longer than the block time, then SIGCONT: clean ledger."""
    config, table = write_routes(tmp_path / "cfg")
    router = routers(config, own_server.url).start()
    producer = Producer(own_server.url, table, 10_000)
    producer.start()
    producer.wait_acked(3_000)
    own_server.signal(signal.SIGSTOP)
    try:
        stalled = client_stalled(own_server.url)
        time.sleep(2.0)  # the fault: a stall ten times the block time while events are in flight
    finally:
        own_server.signal(signal.SIGCONT)
    assert stalled
    ledger = producer.finish()
    wait_quiescent(client, ["ingress"], GROUP, timeout_s=60)
    report = check(client, ledger, DESTINATIONS, DLQ)
    print(report.line("server_sigstop"), "stalled_s=2.0")
    assert report.clean, report.examples
    assert report.events == 10_000
    assert router.alive() and router.readyz() == 200


def client_stalled(url: str) -> bool:
    """True when a PING gets no answer in 0.3 s (the server is really stopped)."""
    probe = redis.Redis.from_url(url, socket_timeout=0.3, socket_connect_timeout=0.3)
    try:
        probe.ping()
        return False
    except redis.TimeoutError:
        return True
    finally:
        probe.close()


@pytest.mark.slow
def test_stalled_connection_is_noticed_by_the_read_timeout(
    tmp_path: Path,
    own_server: EmbeddedServer,
    routers: Callable[..., RouterProcess],
) -> None:
    """A blocked read on a server that went silent (half-open) times out: not ready, then back."""
    config, _ = write_routes(tmp_path / "cfg")
    router = routers(config, own_server.url).start()
    time.sleep(0.3)  # into a blocking read
    own_server.signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        # block_ms 200 + 5 s of read-timeout margin: the silent socket is given up on.
        wait_until(lambda: router.readyz() == 503, 12, "not ready while the server is stalled")
        noticed_s = time.monotonic() - stopped
        router.wait_metric("synapse_redis_up", lambda v: v == 0, timeout_s=2)
    finally:
        own_server.signal(signal.SIGCONT)
    wait_until(lambda: router.readyz() == 200, 20, "ready again by itself")
    assert 5.0 < noticed_s < 8.0, noticed_s
    assert router.metric("synapse_redis_errors_total", kind="connection") >= 1
    router.wait_metric("synapse_redis_up", lambda v: v == 1)


@pytest.mark.slow
def test_server_restarted_empty_while_router_blocked(
    tmp_path: Path,
    own_server: EmbeddedServer,
    client: redis.Redis,
    routers: Callable[..., RouterProcess],
) -> None:
    """Server back with no data: group recreated (counted, logged), routing resumes."""
    config, table = write_routes(tmp_path / "cfg")
    router = routers(config, own_server.url).start()
    first = Ledger()
    produce(client, first, "ingress", mixed(table, 2_000, seed=1))
    wait_quiescent(client, ["ingress"], GROUP)
    assert check(client, first, DESTINATIONS, DLQ).clean
    router.wait_metric("synapse_group_recreated_total", lambda v: v == 1, source="ingress")
    time.sleep(0.3)  # let it settle into a blocking read (the fault is the point, not a wait)
    own_server.kill()
    shutil.rmtree(own_server.data_dir)
    own_server.start()
    wait_until(lambda: router.readyz() == 200, 20, "ready again by itself")
    second = Ledger()
    produce(client, second, "ingress", mixed(table, 2_000, seed=2))
    wait_quiescent(client, ["ingress"], GROUP)
    report = check(client, second, DESTINATIONS, DLQ)
    print(report.line("server_restarted_empty"))
    assert report.clean, report.examples
    assert report.events == 2_000
    router.wait_metric("synapse_group_recreated_total", lambda v: v == 2, source="ingress")
    assert len(router.events("group_created")) == 2


def test_group_vanishing_under_a_blocked_read_is_recreated(
    tmp_path: Path,
    own_server: EmbeddedServer,
    client: redis.Redis,
    routers: Callable[..., RouterProcess],
) -> None:
    """NOGROUP on the blocked read (stream deleted) recreates the group, logs it, keeps routing."""
    config, table = write_routes(tmp_path / "cfg")
    router = routers(config, own_server.url).start()
    time.sleep(0.3)  # into a blocking read
    client.delete("ingress")
    wait_until(lambda: router.events("group_missing"), 10, "NOGROUP noticed")
    ledger = Ledger()
    produce(client, ledger, "ingress", mixed(table, 500))
    wait_quiescent(client, ["ingress"], GROUP)
    report = check(client, ledger, DESTINATIONS, DLQ)
    assert report.clean and report.events == 500, report.examples
    router.wait_metric("synapse_redis_errors_total", lambda v: v >= 1, kind="nogroup")
    router.wait_metric("synapse_group_recreated_total", lambda v: v == 2, source="ingress")
    assert router.readyz() == 200
