"""Raw commands on the hot path: hiredis packing in, hiredis-parsed replies out.

redis-py's asyncio client packs commands in pure Python and post-processes
replies (XREADGROUP into dicts, which would lose duplicate fields). On the two
hot commands (the batch read and the batch commit) Synapse packs with
``hiredis.pack_command`` and reads the reply as hiredis parsed it, through the
connection pool's public ``get_connection`` / ``send_packed_command`` /
``read_response``. Any error disconnects the connection, so a timed-out or
cancelled command can never leave a connection out of step with its replies.
On a Redis Cluster client the command goes through the client's own routing.
"""

from __future__ import annotations

from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

#: A single-server client, or a Redis Cluster client (``synapse.cluster.connect_any``).
Client = aioredis.Redis | RedisCluster


async def execute(client: Client, *args: Any) -> Any:
    """Send one command packed by hiredis; return the raw reply (errors raise)."""
    if isinstance(client, RedisCluster):
        # A cluster client routes by slot and follows redirections itself; the
        # commands the router parses have no reply callback there (cluster.py).
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
    """
    pool = client.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    replies: list[Any] = []
    refused: aioredis.ResponseError | None = None
    try:
        packed = b"".join(hiredis.pack_command(args) for args in commands)
        await conn.send_packed_command(packed, check_health=False)
        for _ in commands:
            try:
                replies.append(await conn.read_response(disable_decoding=True))
            except aioredis.ResponseError as exc:
                refused = refused or exc
                replies.append(exc)
    except BaseException:
        await conn.disconnect(nowait=True)
        raise
    finally:
        await pool.release(conn)
    if refused is not None:
        raise refused
    return replies
