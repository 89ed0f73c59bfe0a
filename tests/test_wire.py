"""Contract tests: every hook ``synapse.wire`` takes into redis-py's internals still holds.

Each test names the hook it pins; an upgrade of redis-py that moves or changes one
fails here, not in the middle of routing.
"""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
import redis.cluster
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, ConnectionPool

from synapse import wire
from synapse.embedded import EmbeddedServer


def test_pool_connection_hooks_keep_their_signatures() -> None:
    """Hook 1: get_connection() takes no argument; send_packed_command takes check_health;
    read_response takes disable_decoding (wire.execute)."""
    get = list(inspect.signature(ConnectionPool.get_connection).parameters.values())[1:]
    optional = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    assert all(p.default is not inspect.Parameter.empty or p.kind in optional for p in get)
    assert "check_health" in inspect.signature(AbstractConnection.send_packed_command).parameters
    assert "disable_decoding" in inspect.signature(AbstractConnection.read_response).parameters
    assert "nowait" in inspect.signature(AbstractConnection.disconnect).parameters


async def test_execute_returns_hiredis_replies_with_duplicate_fields(url: str) -> None:
    """Hook 1 at work: an XREADGROUP reply comes back flat, duplicate fields and order kept."""
    client = wire.connect_any(url, read_timeout_s=5)
    try:
        await wire.execute(client, "XGROUP", "CREATE", "s", "g", "0", "MKSTREAM")
        await wire.execute(client, "XADD", "s", "*", "a", "1", "a", "2", "b", "3")
        reply = await wire.execute(client, "XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">")
        assert reply[0][0] == b"s"
        assert reply[0][1][0][1] == [b"a", b"1", b"a", b"2", b"b", b"3"]
    finally:
        await client.aclose()


async def test_execute_cancelled_mid_reply_leaves_no_connection_out_of_step(
    url: str, r: redis.Redis
) -> None:
    """Hook 1: a cancelled blocking read disconnects its connection, so the next command on
    the pool reads its own reply, not the cancelled one's."""
    client = wire.connect_any(url, read_timeout_s=5)
    try:
        await wire.execute(client, "XGROUP", "CREATE", "s", "g", "$", "MKSTREAM")
        read = asyncio.ensure_future(
            wire.execute(
                client, "XREADGROUP", "GROUP", "g", "c", "BLOCK", 2000, "STREAMS", "s", ">"
            )
        )
        await asyncio.sleep(0.1)
        read.cancel()
        await asyncio.gather(read, return_exceptions=True)
        assert await wire.execute(client, "PING") == b"PONG"
        assert await wire.execute(client, "ECHO", "mine") == b"mine"
    finally:
        await client.aclose()


async def test_execute_many_bounds_the_whole_page_by_the_read_timeout(
    url: str, r: redis.Redis
) -> None:
    """Hook 1 (read_response's timeout=math.inf): a page whose replies do not come within
    the connection's read timeout raises redis-py's TimeoutError and disconnects, so the
    next command on the pool reads its own reply."""
    client = wire.connect_any(url, read_timeout_s=0.3)
    try:
        r.execute_command("CLIENT", "PAUSE", 5000, "WRITE")
        try:
            with pytest.raises(redis.exceptions.TimeoutError, match="3 replies"):
                await wire.execute_many(client, [("XADD", "s", "*", "n", str(i)) for i in range(3)])
        finally:
            r.execute_command("CLIENT", "UNPAUSE")
        assert await wire.execute(client, "ECHO", "mine") == b"mine"
        replies = await wire.execute_many(client, [("XADD", "t", "*", "n", "1"), ("PING",)])
        assert replies[1] == b"PONG"
    finally:
        await client.aclose()


def test_cluster_determine_slot_is_the_routing_hook() -> None:
    """Hook 2: the asyncio RedisCluster routes a command through ``_determine_slot(command,
    *args)``, which ClusterClient overrides for XREADGROUP/XREAD."""
    assert "_determine_slot" in inspect.getsource(RedisCluster)
    params = list(inspect.signature(RedisCluster._determine_slot).parameters)
    assert params[:2] == ["self", "command"]
    assert wire.ClusterClient._determine_slot is not RedisCluster._determine_slot


async def test_cluster_client_finds_stream_slots_without_a_round_trip() -> None:
    """Hook 2 at work: the slot of an XREADGROUP comes from its STREAMS keys, no server asked;
    keys in two slots are refused before anything is sent."""
    client = wire.connect_any("redis+cluster://127.0.0.1:1", read_timeout_s=1)
    assert isinstance(client, wire.ClusterClient)
    args = ("GROUP", "g", "c", "COUNT", 10, "STREAMS", "{a}x", "{a}y", ">", ">")
    assert await client._determine_slot("XREADGROUP", *args) == wire.slot_of("{a}")
    try:
        await client._determine_slot("XREADGROUP", "GROUP", "g", "c", "STREAMS", "a", "b", ">", ">")
    except redis.exceptions.RedisClusterException as exc:
        assert "same key slot" in str(exc)
    else:
        raise AssertionError("keys in two slots were accepted")


def test_cluster_client_reads_streams_raw() -> None:
    """Hook 3: the asyncio cluster client's ``response_callbacks`` is a dict holding the
    stream commands' parsers, and connect_any removes them (raw, flat replies)."""
    assert "response_callbacks" in inspect.getsource(RedisCluster.__init__)
    client = wire.connect_any("redis+cluster://127.0.0.1:1", read_timeout_s=1)
    assert isinstance(client.response_callbacks, dict)
    assert not set(wire.RAW_COMMANDS) & set(client.response_callbacks)


def test_sync_cluster_hands_out_node_clients_through_get_redis_connection() -> None:
    """Hook 4: the sync RedisCluster creates each node's client in
    ``get_redis_connection(node)``, which RawCluster wraps to read stream replies raw."""
    params = list(inspect.signature(redis.cluster.RedisCluster.get_redis_connection).parameters)
    assert params == ["self", "node"]
    assert "self.get_redis_connection(" in inspect.getsource(
        redis.cluster.RedisCluster._execute_command
    )
    assert issubclass(wire.RawCluster, redis.cluster.RedisCluster)


def test_connect_sync_reads_stream_entries_flat(url: str) -> None:
    """The CLI's client reads XRANGE flat, duplicate fields kept (set_response_callback)."""
    client = wire.connect_sync(url, read_timeout_s=5)
    try:
        client.execute_command("XADD", "s", "1-1", "a", "1", "a", "2")
        reply = client.execute_command("XRANGE", "s", "-", "+")
        assert reply == [[b"1-1", [b"a", b"1", b"a", b"2"]]]
    finally:
        client.close()


def test_connect_any_sets_bounded_timeouts_and_resp2(url: str) -> None:
    """Every client gets the read timeout asked for, a bounded connect timeout, RESP2."""
    client = wire.connect_any(url, read_timeout_s=7.5, password="pw")
    assert isinstance(client, aioredis.Redis)
    kwargs = client.get_connection_kwargs()
    assert kwargs["socket_timeout"] == 7.5
    assert kwargs["socket_connect_timeout"] == wire.CONNECT_TIMEOUT_S
    assert kwargs["password"] == "pw"
    assert kwargs["protocol"] == 2


async def test_single_and_pooled_clients_read_streams_flat_and_name_themselves(
    url: str, r: redis.Redis
) -> None:
    """connect_single / connect_pool (the gateway's): raw XRANGE, client names set, the pool
    bounded to its size."""
    r.execute_command("XADD", "s", "1-1", "a", "1", "a", "2")
    single = wire.connect_single(url, read_timeout_s=5, password=None, client_name="t-one")
    pool = wire.connect_pool(
        url, max_connections=2, wait_s=5, read_timeout_s=5, password=None, client_name="t-pool"
    )
    try:
        for client in (single, pool):
            reply = await client.execute_command("XRANGE", "s", "-", "+")
            assert reply == [[b"1-1", [b"a", b"1", b"a", b"2"]]]
        names = {c["name"] for c in r.client_list()}
        assert {"t-one", "t-pool"} <= names
        assert pool.connection_pool.max_connections == 2
    finally:
        await single.aclose()
        await pool.aclose()


async def test_connect_any_reaches_a_unix_socket(tmp_path: Path) -> None:
    """unix:///path works (README): no TCP-only option such as socket_keepalive is passed
    to a unix socket connection, which refuses it."""
    sock = tmp_path / "s.sock"
    server = EmbeddedServer(
        data_dir=tmp_path / "data",
        extra_args=("--unixsocket", str(sock), "--unixsocketperm", "700"),
    )
    server.start()
    client = wire.connect_any(f"unix://{sock}", read_timeout_s=5)
    try:
        assert await client.ping()
        assert await wire.execute(client, "ECHO", "over unix") == b"over unix"
    finally:
        await client.aclose()
        server.stop()
