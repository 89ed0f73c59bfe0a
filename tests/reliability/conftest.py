"""Fixtures of the fault-injection suite: a server of the test's own, routers as processes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from synapse.config import RoutingTable
from synapse.embedded import EmbeddedServer
from tests.reliability.harness import DESTINATIONS, DLQ, GROUP, mixed, write_routes
from tests.reliability.ledger import Fields, Ledger, Report, check, produce, wait_quiescent
from tests.support.router import RouterProcess


def producer_client(url: str) -> redis.Redis:
    """No silent retries: a pipeline resent after a lost reply would add every event twice."""
    return redis.Redis.from_url(url, socket_timeout=30, retry=Retry(NoBackoff(), 0))


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A server for this test alone (so it can be killed), AOF with appendfsync always."""
    srv = EmbeddedServer(data_dir=tmp_path / "redis", appendfsync="always")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def client(own_server: EmbeddedServer) -> Iterator[redis.Redis]:
    """A sync client on the test's server, never retrying by itself (a resent XADD is a copy)."""
    c = producer_client(own_server.url)
    yield c
    c.close()


@pytest.fixture
def routers(tmp_path: Path) -> Iterator[Callable[..., RouterProcess]]:
    """Make ``RouterProcess``es logging under tmp; any still running are killed at the end."""
    made: list[RouterProcess] = []

    def make(config: Path, url: str, consumer: str | None = None) -> RouterProcess:
        log_path = tmp_path / f"router-{len(made)}.log"
        proc = RouterProcess(config, url, consumer=consumer, log_path=log_path)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.kill()


@dataclass
class Scenario:
    """One fault test's server, client, routes.yaml and routers: the set-up they all share."""

    server: EmbeddedServer
    client: redis.Redis
    folder: Path
    make_router: Callable[..., RouterProcess]
    config: Path = field(default_factory=Path)
    table: RoutingTable | None = None

    def routes(self, **settings: int) -> RoutingTable:
        """Write routes.yaml (``write_routes`` settings) for the routers started after."""
        self.config, self.table = write_routes(self.folder / "cfg", **settings)
        return self.table

    def router(self, consumer: str | None = None, *, wait_ready: bool = True) -> RouterProcess:
        """Start a router on the test's server (default routes unless ``routes`` was called)."""
        if self.table is None:
            self.routes()
        proc = self.make_router(self.config, self.server.url, consumer)
        return proc.start(wait_ready=wait_ready)

    def mixed(self, n: int, seed: int = 7) -> Iterator[tuple[Fields, frozenset[str]]]:
        """``harness.mixed`` events for this scenario's table, into ``ingress``."""
        assert self.table is not None, "routes() first"
        return mixed(self.table, n, seed)

    def produce(
        self, ledger: Ledger, events: Iterable[tuple[Fields, Iterable[str]]], chunk: int = 500
    ) -> int:
        """``ledger.produce`` into ``ingress`` with the test's client."""
        return produce(self.client, ledger, "ingress", events, chunk)

    def settle(
        self, ledger: Ledger, streams: Iterable[str] = DESTINATIONS, timeout_s: float = 60.0
    ) -> Report:
        """Wait until the group has routed everything, then check ``ledger`` (with the DLQ)."""
        wait_quiescent(self.client, ["ingress"], GROUP, timeout_s)
        return check(self.client, ledger, streams, DLQ)


@pytest.fixture
def scenario(
    tmp_path: Path,
    own_server: EmbeddedServer,
    client: redis.Redis,
    routers: Callable[..., RouterProcess],
) -> Scenario:
    """The test's own server and client, routes.yaml under tmp, routers killed at the end."""
    return Scenario(server=own_server, client=client, folder=tmp_path, make_router=routers)
