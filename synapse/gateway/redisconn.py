"""The gateway's Redis clients: one reader connection, one small pool for the rest.

However many browsers connect, the gateway holds ``1 + CONTROL_CONNECTIONS``
connections at most: the reader blocked in XREAD, and a bounded pool (joins,
catch-up XRANGEs, readiness) that callers queue for. Stream replies come back
raw (flat field lists, order and duplicates kept). Redis Cluster and Kafka URLs
are refused: the gateway reads one server.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from synapse import settings
from synapse.cluster import is_cluster_url
from synapse.errors import UsageError

#: Connections for joins and catch-ups, shared by every client.
CONTROL_CONNECTIONS = 4
RAW_COMMANDS = ("XREAD", "XRANGE", "XREVRANGE")


def check_url(url: str) -> None:
    """Refuse URLs the gateway cannot read (with what to do instead)."""
    if is_cluster_url(url):
        raise UsageError("synapse-gateway reads one Redis server; Redis Cluster is not supported")
    if url.startswith("kafka://"):
        raise UsageError("synapse-gateway reads Redis streams; the Kafka backend is not supported")


def _options() -> dict[str, Any]:
    options: dict[str, Any] = {"socket_connect_timeout": 5, "protocol": 2}
    found = settings.password()
    if found:
        options["password"] = found
    return options


def _raw(client: aioredis.Redis) -> aioredis.Redis:
    for command in RAW_COMMANDS:
        client.set_response_callback(command, _raw_reply)
    return client


def _raw_reply(response: Any, **options: Any) -> Any:
    return response or []


def reader_client(url: str, block_ms: int) -> aioredis.Redis:
    """The reader's own connection; no silent retries, so a reconnect is always seen."""
    return _raw(
        aioredis.Redis.from_url(
            url,
            single_connection_client=True,
            socket_timeout=block_ms / 1000 + 10,
            retry=Retry(NoBackoff(), 0),
            client_name="synapse-gateway:reader",
            **_options(),
        )
    )


def control_client(url: str) -> aioredis.Redis:
    """The shared pool: at most CONTROL_CONNECTIONS, callers wait for a free one."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=CONTROL_CONNECTIONS,
        timeout=20,
        socket_timeout=20,
        client_name="synapse-gateway",
        **_options(),
    )
    return _raw(aioredis.Redis.from_pool(pool))  # owns the pool: aclose() closes it


async def call(client: aioredis.Redis, *args: Any) -> Any:
    """One raw command (stream replies flat, see ``_raw``)."""
    return await client.execute_command(*args)  # type: ignore[no-untyped-call]


async def key_type(client: aioredis.Redis, key: str) -> str:
    reply = await call(client, "TYPE", key)
    return reply.decode() if isinstance(reply, bytes) else str(reply)
