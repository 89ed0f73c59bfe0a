"""Shared fixtures: a real server on a free port, tables written to tmp folders."""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from synapse.config import RoutingTable, load_table
from synapse.consumer import Router
from synapse.embedded import EmbeddedServer
from synapse.metrics import Metrics
from tests.support.polling import wait_for, wait_sync

__all__ = ["wait_for", "wait_sync"]  # the one polling helper, for the suite's imports

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """One real server (bundled Valkey, or $SYNAPSE_SERVER) for the session."""
    srv = EmbeddedServer(data_dir=tmp_path_factory.mktemp("server"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def url(server: EmbeddedServer) -> str:
    """The session server's URL, flushed before each test."""
    if not server.ping():  # a test may have killed it: bring it back
        server.start()
    client = redis.Redis.from_url(server.url)
    client.flushall()
    client.close()
    return server.url


@pytest.fixture
def r(url: str) -> Iterator[redis.Redis]:
    """A sync client on the flushed server (bytes replies)."""
    client = redis.Redis.from_url(url)
    yield client
    client.close()


def write_table(folder: Path, yaml_text: str, schemas: dict[str, Any] | None = None) -> Path:
    """Write routes.yaml (dedented) and schema files into ``folder``; return the yaml path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "routes.yaml"
    path.write_text(textwrap.dedent(yaml_text))
    for name, schema in (schemas or {}).items():
        target = folder / "schemas" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(schema))
    return path


@pytest.fixture
def table_from(tmp_path: Path) -> Callable[..., RoutingTable]:
    """Build a compiled table from YAML text (and optional schemas) in a tmp folder."""

    def build(yaml_text: str, schemas: dict[str, Any] | None = None) -> RoutingTable:
        return load_table(write_table(tmp_path / "cfg", yaml_text, schemas))

    return build


@contextlib.asynccontextmanager
async def running(table: RoutingTable, url: str, **kwargs: Any) -> AsyncIterator[Router]:
    """A Router running in this event loop until the block exits (then stopped cleanly)."""
    router = Router(table, url, kwargs.pop("metrics", None) or Metrics(), **kwargs)
    task = asyncio.create_task(router.run())
    try:
        await wait_for(lambda: router.ready or task.done(), what="router ready")
        if task.done():
            task.result()
        yield router
    finally:
        router.stop()
        await asyncio.wait_for(task, 30)
        await router.close()


def fields_of(entry: tuple[bytes, dict[bytes, bytes]]) -> dict[bytes, bytes]:
    return entry[1]


@pytest.fixture
async def aclient(url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(url)
    yield client
    await client.aclose()
