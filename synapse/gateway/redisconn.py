"""The gateway's Redis clients: one reader connection, one small pool for the rest.

However many browsers connect, the gateway holds ``1 + CONTROL_CONNECTIONS``
connections at most: the reader blocked in XREAD, and a bounded pool (joins,
catch-up XRANGEs, readiness) that callers queue for, both set up by ``wire.py``.
Stream replies come back raw (flat field lists, order and duplicates kept).
A Redis Cluster URL is read by ``clusterreader.py``, a ``kafka://`` one by
``kafkareader.py``.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from synapse import settings, wire
from synapse.kafka import url as kafka_url

#: Connections for joins and catch-ups, shared by every client.
CONTROL_CONNECTIONS = 4


def check_url(url: str) -> None:
    """Refuse a ``kafka://`` URL that does not name its brokers correctly (UsageError)."""
    if kafka_url.backend_kind(url) == "kafka":
        kafka_url.parse(url)


def reader_client(url: str, block_ms: int) -> aioredis.Redis:
    """The reader's own connection; no silent retries, so a reconnect is always seen."""
    return wire.connect_single(
        url,
        read_timeout_s=block_ms / 1000 + 10,
        password=settings.password(),
        client_name="synapse-gateway:reader",
    )


def control_client(url: str) -> aioredis.Redis:
    """The shared pool: at most CONTROL_CONNECTIONS, callers wait for a free one."""
    return wire.connect_pool(
        url,
        max_connections=CONTROL_CONNECTIONS,
        wait_s=20,
        read_timeout_s=20,
        password=settings.password(),
        client_name="synapse-gateway",
    )


async def call(client: aioredis.Redis, *args: Any) -> Any:
    """One raw command (stream replies flat, see ``_raw``)."""
    return await client.execute_command(*args)  # type: ignore[no-untyped-call]


async def key_type(client: aioredis.Redis, key: str) -> str:
    reply = await call(client, "TYPE", key)
    return reply.decode() if isinstance(reply, bytes) else str(reply)
