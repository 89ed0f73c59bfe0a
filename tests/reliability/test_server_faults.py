"""The server crashes, stalls, comes back empty: the router rides it out, nothing lost or twice."""

from __future__ import annotations

import shutil
import signal
import threading
import time

import pytest
import redis

from tests.reliability.conftest import Scenario, producer_client
from tests.reliability.harness import mixed
from tests.reliability.ledger import Ledger, produce
from tests.support.polling import wait_sync


class Producer(threading.Thread):
    """Produces ``n`` events in small chunks, carrying on through server outages."""

    def __init__(self, scenario: Scenario, n: int, chunk: int = 100) -> None:
        super().__init__(daemon=True)
        assert scenario.table is not None
        self.url, self.table, self.n, self.chunk = scenario.server.url, scenario.table, n, chunk
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
        wait_sync(lambda: len(self.ledger.acked) >= count, timeout_s, f"{count} events acked")

    def finish(self, timeout_s: float = 90) -> Ledger:
        self.join(timeout_s)
        assert not self.is_alive(), "producer stuck"
        return self.ledger


@pytest.mark.slow
def test_server_kill9_with_appendfsync_always_loses_nothing(scenario: Scenario) -> None:
    """kill -9 of the server mid-run, restarted on its AOF: every acknowledged event routed once."""
    router = scenario.router()
    producer = Producer(scenario, 20_000)
    producer.start()
    producer.wait_acked(6_000)
    scenario.server.kill()
    wait_sync(lambda: router.readyz() == 503, 10, "not ready while the server is down")
    router.wait_metric("synapse_redis_up", lambda v: v == 0)
    scenario.server.start()  # same port, same data folder: the AOF is replayed
    ledger = producer.finish()
    wait_sync(lambda: router.readyz() == 200, 20, "ready again by itself")
    report = scenario.settle(ledger)
    print(report.line("server_kill9_aof_always"), f"failed_chunks={producer.failed_chunks}")
    assert report.clean, report.examples
    assert report.events >= 15_000
    assert router.alive() and router.events("redis_unavailable")


@pytest.mark.slow
def test_server_stalled_then_resumed(scenario: Scenario) -> None:
    """SIGSTOP of the server mid-flow, longer than the block time, then SIGCONT: clean ledger."""
    router = scenario.router()
    producer = Producer(scenario, 10_000)
    producer.start()
    producer.wait_acked(3_000)
    scenario.server.signal(signal.SIGSTOP)
    try:
        stalled = client_stalled(scenario.server.url)
        time.sleep(2.0)  # the fault: a stall ten times the block time while events are in flight
    finally:
        scenario.server.signal(signal.SIGCONT)
    assert stalled
    ledger = producer.finish()
    report = scenario.settle(ledger)
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
def test_stalled_connection_is_noticed_by_the_read_timeout(scenario: Scenario) -> None:
    """A blocked read on a server that went silent (half-open) times out: not ready, then back."""
    router = scenario.router()
    time.sleep(0.3)  # into a blocking read
    scenario.server.signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        # block_ms 200 + 5 s of read-timeout margin: the silent socket is given up on.
        wait_sync(lambda: router.readyz() == 503, 12, "not ready while the server is stalled")
        noticed_s = time.monotonic() - stopped
        router.wait_metric("synapse_redis_up", lambda v: v == 0, timeout_s=2)
    finally:
        scenario.server.signal(signal.SIGCONT)
    wait_sync(lambda: router.readyz() == 200, 20, "ready again by itself")
    assert 5.0 < noticed_s < 8.0, noticed_s
    assert router.metric("synapse_redis_errors_total", kind="connection") >= 1
    router.wait_metric("synapse_redis_up", lambda v: v == 1)


@pytest.mark.slow
def test_server_restarted_empty_while_router_blocked(scenario: Scenario) -> None:
    """Server back with no data: group recreated (counted, logged), routing resumes."""
    router = scenario.router()
    first = Ledger()
    scenario.produce(first, scenario.mixed(2_000, seed=1))
    assert scenario.settle(first).clean
    router.wait_metric("synapse_group_recreated_total", lambda v: v == 1, source="ingress")
    time.sleep(0.3)  # let it settle into a blocking read (the fault is the point, not a wait)
    scenario.server.kill()
    shutil.rmtree(scenario.server.data_dir)
    scenario.server.start()
    wait_sync(lambda: router.readyz() == 200, 20, "ready again by itself")
    second = Ledger()
    scenario.produce(second, scenario.mixed(2_000, seed=2))
    report = scenario.settle(second)
    print(report.line("server_restarted_empty"))
    assert report.clean, report.examples
    assert report.events == 2_000
    router.wait_metric("synapse_group_recreated_total", lambda v: v == 2, source="ingress")
    assert len(router.events("group_created")) == 2


def test_group_vanishing_under_a_blocked_read_is_recreated(scenario: Scenario) -> None:
    """NOGROUP on the blocked read (stream deleted) recreates the group, logs it, keeps routing."""
    router = scenario.router()
    time.sleep(0.3)  # into a blocking read
    scenario.client.delete("ingress")
    wait_sync(lambda: router.events("group_missing"), 10, "NOGROUP noticed")
    ledger = Ledger()
    scenario.produce(ledger, scenario.mixed(500))
    report = scenario.settle(ledger)
    assert report.clean and report.events == 500, report.examples
    router.wait_metric("synapse_redis_errors_total", lambda v: v >= 1, kind="nogroup")
    router.wait_metric("synapse_group_recreated_total", lambda v: v == 2, source="ingress")
    assert router.readyz() == 200
