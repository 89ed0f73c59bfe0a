"""Cluster fixtures: a local 3-primary Valkey cluster for the session, flushed per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis.cluster import RedisCluster

from tests.cluster.localcluster import LocalCluster


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three primaries, no replicas, on free ports (cluster bus ports too)."""
    found = LocalCluster(tmp_path_factory.mktemp("cluster"), primaries=3).start()
    yield found
    found.stop()


@pytest.fixture
def curl(local_cluster: LocalCluster) -> str:
    """The cluster's redis+cluster:// URL, every primary flushed before the test."""
    local_cluster.flush()
    return local_cluster.url


@pytest.fixture
def rc(curl: str, local_cluster: LocalCluster) -> Iterator[RedisCluster]:
    """A sync cluster client (bytes replies)."""
    node = local_cluster.primary_nodes()[0]
    client = RedisCluster(host="127.0.0.1", port=node.port)
    yield client
    client.close()


def slot(key: str) -> int:
    return int(redis.cluster.key_slot(key.encode()))
