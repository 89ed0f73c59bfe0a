"""Fixtures of the fault-injection suite: a server of the test's own, routers as processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from synapse.embedded import EmbeddedServer
from tests.reliability.harness import RouterProcess


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
        proc = RouterProcess(config, url, tmp_path / f"router-{len(made)}.log", consumer)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.kill()
