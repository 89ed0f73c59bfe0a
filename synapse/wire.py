"""Redis connections: every client set-up, and every hook into redis-py's internals.

One place decides how Synapse talks to Redis, for the router, the client library
and the CLI alike:

- ``connect_any`` (asyncio) and ``connect_sync`` (the CLI): a plain client for
  ``redis://``, ``rediss://`` and ``unix://``, a Redis Cluster client for
  ``redis+cluster://`` / ``rediss+cluster://`` (seeded by that node; the client
  discovers the rest, follows MOVED/ASK and re-reads the slot map after a
  failover). Bounded connect and read timeouts, keepalive, RESP2, a password
  from the caller (never from the URL on argv). The cluster client's retries are
  few and immediate, so an outage surfaces quickly and the caller's jittered
  backoff paces the retries.
- ``execute``: the two hot commands (the batch read and the batch commit) packed
  by ``hiredis.pack_command`` and read back as hiredis parsed them, through the
  connection pool's ``get_connection`` / ``send_packed_command`` /
  ``read_response(disable_decoding=True)``. Any error but a server refusal
  disconnects the connection, so a timed-out or cancelled command can never leave
  a connection out of step with its replies. On a cluster client the command goes
  through the client's own routing.

The hooks into redis-py beyond its documented API, each pinned by a contract test
in ``tests/test_wire.py`` so an upgrade that breaks one fails there first:

1. ``ConnectionPool.get_connection()`` / ``Connection.send_packed_command(..,
   check_health=)`` / ``Connection.read_response(disable_decoding=)`` (``execute``,
   and ``execute_many``: several commands in one write, every reply read);
2. ``RedisCluster._determine_slot`` (``ClusterClient``: stream keys found without
   a COMMAND GETKEYS round trip);
3. ``RedisCluster.response_callbacks`` (asyncio cluster: stream reads raw);
4. ``redis.cluster.RedisCluster.get_redis_connection`` (sync cluster: each node's
   client gets the raw stream-read callbacks as it is created).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import hiredis
import redis
import redis.asyncio as aioredis
import redis.cluster
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError

from synapse.slots import slot_of

#: A single-server client, or a Redis Cluster client (``connect_any``).
Client = aioredis.Redis | RedisCluster
#: The CLI's sync client: one server, or Redis Cluster (``connect_sync``).
SyncClient = redis.Redis | redis.cluster.RedisCluster

SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
CONNECT_TIMEOUT_S = 5.0
#: Raw replies for the commands the router parses itself (flat field lists, like hiredis).
RAW_COMMANDS = (
    "XREADGROUP",
    "XREAD",
    "XAUTOCLAIM",
    "XCLAIM",
    "XPENDING",
    "XRANGE",
    "XREVRANGE",
)
#: Replies the CLI and the gateway read raw: entries stay flat [f1, v1, ...] (duplicates
#: and order kept).
SYNC_RAW_COMMANDS = ("XRANGE", "XREVRANGE", "XREAD")


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme.lower() in SCHEMES


def is_unix_url(url: str) -> bool:
    return urlsplit(url).scheme.lower() == "unix"


def node_url(url: str) -> str:
    """``redis+cluster://h:p`` -> ``redis://h:p`` (the seed node's plain URL)."""
    parts = urlsplit(url)
    scheme = SCHEMES.get(parts.scheme.lower(), parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", parts.query, parts.fragment))


# -- asyncio ---------------------------------------------------------------------------


class ClusterClient(RedisCluster):
    """RedisCluster that finds stream keys itself (no COMMAND GETKEYS round trip)."""

    async def _determine_slot(self, command: str, *args: Any) -> int:
        name = command.upper() if isinstance(command, str) else bytes(command).decode().upper()
        if name in ("XREADGROUP", "XREAD"):
            upper = [a.upper() if isinstance(a, str) else a for a in args]
            at = upper.index("STREAMS") + 1
            streams = args[at : at + (len(args) - at) // 2]
            slots = {slot_of(k) for k in streams}
            if len(slots) != 1:
                raise RedisClusterException(f"{name} - all keys must map to the same key slot")
            return slots.pop()
        slot: int = await super()._determine_slot(command, *args)
        return slot


def connect_any(url: str, *, read_timeout_s: float | None, password: str | None = None) -> Client:
    """A client for ``url``: a cluster client for ``redis+cluster://``, else a plain one.

    Both return raw replies for stream reads (flat field lists) and use RESP2.
    ``read_timeout_s`` must outlast any BLOCK the client is used for (None: no
    read timeout). The CLI calls this too, so every command that takes a URL
    works on a cluster.
    """
    kwargs: dict[str, Any] = {
        "socket_timeout": read_timeout_s,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "decode_responses": False,
        "protocol": 2,
    }
    if not is_unix_url(url):
        kwargs["socket_keepalive"] = True  # TCP only: a unix socket connection refuses it
    if password:
        kwargs["password"] = password
    if not is_cluster_url(url):
        return aioredis.Redis.from_url(url, **kwargs)
    client = ClusterClient.from_url(
        node_url(url),
        require_full_coverage=False,
        # Two quick retries ride out a MOVED storm or a slot map refresh; longer
        # outages reach the caller's jittered backoff instead of spinning here.
        retry=Retry(NoBackoff(), 2),
        **kwargs,
    )
    for command in RAW_COMMANDS:
        client.response_callbacks.pop(command, None)
    return client


async def execute(client: Client, *args: Any) -> Any:
    """Send one command packed by hiredis; return the raw reply (errors raise)."""
    if isinstance(client, RedisCluster):
        # A cluster client routes by slot and follows redirections itself; the
        # commands the router parses have no reply callback there (connect_any).
        return await client.execute_command(*args)
    pool = client.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await conn.send_packed_command(hiredis.pack_command(args), check_health=False)
        reply = await conn.read_response(disable_decoding=True)
    except aioredis.ResponseError:
        raise  # the reply was read whole: the connection is in step
    except BaseException:
        await conn.disconnect(nowait=True)
        raise
    finally:
        await pool.release(conn)
    return reply


async def execute_many(client: aioredis.Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Send ``commands`` in one write (hiredis-packed) and read every reply, in order.

    A command the server refuses does not stop the others: every reply is read,
    then the first refusal is raised. Any other error disconnects the connection.
    The connection's read timeout bounds the whole page, not each reply: one asyncio
    timeout per reply cost ~5 us per published event (docs/performance.md).
    """
    pool = client.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    replies: list[Any] = []
    refused: aioredis.ResponseError | None = None
    try:
        packed = b"".join(hiredis.pack_command(args) for args in commands)
        await conn.send_packed_command(packed, check_health=False)
        try:
            async with asyncio.timeout(conn.socket_timeout):
                for _ in commands:
                    try:
                        # math.inf: no per-reply timeout (redis-py 8's documented opt-out)
                        reply = await conn.read_response(disable_decoding=True, timeout=math.inf)
                    except aioredis.ResponseError as exc:
                        refused = refused or exc
                        reply = exc
                    replies.append(reply)
        except TimeoutError as exc:  # the page's deadline, as redis-py reports a read timeout
            raise RedisTimeoutError(f"Timeout reading {len(commands)} replies") from exc
    except BaseException:
        await conn.disconnect(nowait=True)
        raise
    finally:
        await pool.release(conn)
    if refused is not None:
        raise refused
    return replies


def connect_single(
    url: str, *, read_timeout_s: float, password: str | None, client_name: str
) -> aioredis.Redis:
    """One connection of its own on one server, with no silent retry (a reconnect is always
    seen by the caller); stream reads raw (``SYNC_RAW_COMMANDS``). The gateway's reader."""
    client = aioredis.Redis.from_url(
        url,
        single_connection_client=True,
        socket_timeout=read_timeout_s,
        retry=Retry(NoBackoff(), 0),
        client_name=client_name,
        **_single_options(password),
    )
    return _raw(client)


def connect_pool(
    url: str,
    *,
    max_connections: int,
    wait_s: float,
    read_timeout_s: float,
    password: str | None,
    client_name: str,
) -> aioredis.Redis:
    """A bounded pool on one server that callers queue for (up to ``wait_s``); stream
    reads raw. The client owns the pool: ``aclose()`` closes it."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=wait_s,
        socket_timeout=read_timeout_s,
        client_name=client_name,
        **_single_options(password),
    )
    return _raw(aioredis.Redis.from_pool(pool))


def _single_options(password: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {"socket_connect_timeout": CONNECT_TIMEOUT_S, "protocol": 2}
    if password:
        options["password"] = password
    return options


# -- sync (the CLI) ----------------------------------------------------------------------


def connect_sync(
    url: str, *, read_timeout_s: float = 30, password: str | None = None
) -> SyncClient:
    """A sync client for ``url`` whose stream reads come back flat (``SYNC_RAW_COMMANDS``)."""
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": read_timeout_s,
        "protocol": 2,
    }
    if password:
        kwargs["password"] = password
    if is_cluster_url(url):
        return RawCluster.from_url(node_url(url), require_full_coverage=False, **kwargs)
    return _raw(redis.Redis.from_url(url, **kwargs))


class RawCluster(redis.cluster.RedisCluster):
    """A sync cluster client whose stream reads come back flat, as on one server.

    Replies are parsed by each node's own client (created as the slot map changes),
    so the raw callbacks are set on the node client every time one is handed out.
    """

    def get_redis_connection(self, node: redis.cluster.ClusterNode) -> redis.Redis:
        return _raw(super().get_redis_connection(node))


_C = TypeVar("_C", redis.Redis, aioredis.Redis)


def _raw(client: _C) -> _C:
    for command in SYNC_RAW_COMMANDS:
        client.set_response_callback(command, _raw_reply)
    return client


def _raw_reply(response: Any, **options: Any) -> Any:
    return response or []
