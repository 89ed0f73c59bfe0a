"""The gateway's reader on Redis Cluster: one blocking XREAD per hash slot, kept in flight.

A multi-key XREAD must keep to one hash slot, so the watched streams are read
with one ``XREAD BLOCK`` per slot group (``slots.group_by_slot``), each on a
connection of its own from the cluster client's pools, and kept in flight across
turns so a busy slot never re-issues the blocked reads of idle ones. A read
returns what the slots that answered first found; a slot group whose streams
changed (a stream joined or left it) has its read cancelled and issued again at
the hub's positions. XREAD without a group is idempotent: a read cancelled, or
one whose reply came with an error from another slot, loses nothing (it is read
again from the same ids). Joins, catch-up XRANGEs and ``/streams`` (SCAN on every
primary) go through the same client, routed by key. Connections: one per watched
slot group plus a few for the rest, however many clients.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from synapse import settings, wire
from synapse.gateway.channel import Batches
from synapse.gateway.cursor import Position, id_text
from synapse.gateway.redisreader import RedisReader, decode_reply
from synapse.gateway.store import NotStreams
from synapse.slots import group_by_slot

#: One slot group's read in flight: the ids it was issued with, and the task.
InFlight = tuple[tuple[str, ...], "asyncio.Task[Any]"]


class ClusterReader(RedisReader):
    """Redis Cluster streams: one XREAD per slot group; the rest as on one server."""

    errors: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)

    def __init__(self, url: str, *, block_ms: int, count: int) -> None:
        self.block_ms = block_ms
        self.count = count
        self.client = wire.connect_any(
            url, read_timeout_s=block_ms / 1000 + 10, password=settings.password()
        )
        self.control = self.client  # type: ignore[assignment]  # joins, XRANGE, SCAN: by key
        self._reads: dict[tuple[str, ...], InFlight] = {}
        self._woken = asyncio.Event()

    async def connect(self) -> None:
        await self.ping()

    async def ping(self) -> None:
        """Every primary answers (one away: its streams cannot be read, so not ready)."""
        await self.client.execute_command("PING", target_nodes=RedisCluster.PRIMARIES)

    async def read(self, positions: Mapping[str, Position]) -> Batches:
        groups = group_by_slot(positions)
        for group in [g for g in self._reads if g not in groups]:
            self._cancel(group)
        for group in groups:
            ids = tuple(id_text((positions[s][0], positions[s][1])) for s in group)
            found = self._reads.get(group)
            if found is not None and found[0] != ids:
                self._cancel(group)
                found = None
            if found is None:
                command = ("XREAD", "COUNT", self.count, "BLOCK", self.block_ms)
                task = asyncio.ensure_future(
                    wire.execute(self.client, *command, "STREAMS", *group, *ids)
                )
                self._reads[group] = (ids, task)
        self._woken.clear()
        woken = asyncio.ensure_future(self._woken.wait())
        try:
            await asyncio.wait(
                {woken, *(task for _, task in self._reads.values())},
                timeout=self.block_ms / 1000 + 5,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            woken.cancel()
        out: list[Any] = []
        error: BaseException | None = None
        for group, (_, task) in list(self._reads.items()):
            if not task.done():
                continue
            del self._reads[group]
            exc = None if task.cancelled() else task.exception()
            if exc is not None:
                error = error or exc
            elif not task.cancelled() and task.result():
                out += decode_reply(task.result())
        if error is not None:
            if "WRONGTYPE" in str(error):
                raise NotStreams(await self._non_streams(list(positions))) from error
            raise error  # the others' entries are read again from the same ids
        return out

    def _cancel(self, group: tuple[str, ...]) -> None:
        _, task = self._reads.pop(group)
        task.cancel()
        task.add_done_callback(_retrieve)

    async def wake(self) -> None:
        """End the wait for the slots' reads (new streams are issued next turn)."""
        self._woken.set()

    async def close(self) -> None:
        for group in list(self._reads):
            self._cancel(group)
        await asyncio.sleep(0)
        await self.client.aclose()


def _retrieve(task: asyncio.Task[Any]) -> None:
    """A cancelled read's outcome, fetched so that asyncio does not warn about it."""
    with contextlib.suppress(BaseException):
        task.exception()
