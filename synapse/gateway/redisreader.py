"""The gateway's reader on Redis: one XREAD for every stream, XRANGE for catch-ups.

One dedicated connection blocks in ``XREAD BLOCK`` on every active stream (no
consumer group: a gateway reads, it never acknowledges); a new stream is picked
up at once by waking it with ``CLIENT UNBLOCK``. Joins, catch-up ``XRANGE``\\ s and
``/streams`` share a small pool (``redisconn.py``): however many clients there
are, the gateway holds ``1 + CONTROL_CONNECTIONS`` connections at most.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

from redis.exceptions import RedisError, ResponseError

from synapse import log
from synapse.gateway.channel import Batches
from synapse.gateway.cursor import REDIS, ZERO, Codec, IdKey, Position, id_key, id_text
from synapse.gateway.redisconn import call, control_client, key_type, reader_client
from synapse.gateway.sse import Entry, entry
from synapse.gateway.store import NotAStream, NotStreams

logger = log.get("synapse.gateway")


class RedisReader:
    """Redis streams through one blocked reader connection and a small shared pool."""

    label = "Redis"
    codec: Codec = REDIS
    errors: tuple[type[BaseException], ...] = (RedisError, OSError)
    internal_prefixes: tuple[str, ...] = ("synapse:",)

    def __init__(self, url: str, *, block_ms: int, count: int) -> None:
        self.block_ms = block_ms
        self.count = count
        self._reader = reader_client(url, block_ms)
        self.control = control_client(url)
        self._reader_id: int | None = None
        self._blocked = False

    async def connect(self) -> None:
        self._reader_id = None
        self._reader_id = int(await call(self._reader, "CLIENT", "ID"))

    async def ping(self) -> None:
        await call(self._reader, "PING")

    async def join(self, stream: str) -> Position:
        kind = await key_type(self.control, stream)
        if kind not in ("stream", "none"):
            raise NotAStream(f"{stream!r} is a {kind}, not a stream")
        reply = await call(self.control, "XREVRANGE", stream, "+", "-", "COUNT", 1)
        return id_key(reply[0][0].decode()) if reply else ZERO

    async def read(self, positions: Mapping[str, Position]) -> Batches:
        streams = list(positions)
        ids = [id_text((k[0], k[1])) for k in (positions[s] for s in streams)]
        self._blocked = True
        try:
            reply = await call(
                self._reader,
                "XREAD",
                "COUNT",
                self.count,
                "BLOCK",
                self.block_ms,
                "STREAMS",
                *streams,
                *ids,
            )
        except ResponseError as exc:
            if "WRONGTYPE" in str(exc):
                raise NotStreams(await self._non_streams(streams)) from exc
            raise
        finally:
            self._blocked = False
        return decode_reply(reply) if reply else []

    async def _non_streams(self, streams: list[str]) -> list[str]:
        bad = []
        for s in streams:
            with contextlib.suppress(RedisError):
                kind = await key_type(self.control, s)
                if kind not in ("stream", "none"):
                    logger.warning("stream_not_a_stream", stream=s, kind=kind)
                    bad.append(s)
        return bad

    def restarted(self) -> list[tuple[str, IdKey]]:
        return []  # entry ids are times: a stream made again numbers past the old ids

    async def wake(self) -> None:
        """Unblock the XREAD in progress so it picks up new streams now."""
        if not self._blocked or self._reader_id is None:
            return
        try:
            await call(self.control, "CLIENT", "UNBLOCK", self._reader_id)
        except RedisError as exc:  # e.g. an ACL without CLIENT: new streams wait block_ms
            logger.debug("reader_unblock_failed", error=str(exc))

    async def catch_up(
        self, stream: str, start: Position, end: Position, page: int
    ) -> AsyncGenerator[list[Entry], None]:
        """XRANGE from after ``start`` to ``end``, ``page`` entries per call."""
        pos = start
        while pos < end:
            ms, seq = pos[0], pos[1]
            reply = await call(
                self.control, "XRANGE", stream, f"{ms}-{seq + 1}", id_text((end[0], end[1])),
                "COUNT", page,
            )  # fmt: skip
            if not reply:
                return
            entries = [_entry(stream, raw_id, fields) for raw_id, fields in reply]
            yield entries
            pos = entries[-1].key
            if len(reply) < page:
                return

    async def names(self, allows: Callable[[str], bool], limit: int) -> list[str]:
        names: list[str] = []
        async for raw in self.control.scan_iter(count=1000, _type="stream"):
            name = raw.decode("utf-8", "replace")
            if allows(name):
                names.append(name)
            if len(names) >= limit:
                break
        return names

    async def close(self) -> None:
        await self._reader.aclose()
        await self.control.aclose()


def _entry(stream: str, raw_id: bytes, fields: Any) -> Entry:
    entry_id = raw_id.decode()
    return entry(stream, entry_id, id_key(entry_id), fields)


def decode_reply(reply: Any) -> Batches:
    """A raw XREAD reply as (stream, entries) batches (deleted entries left out)."""
    out = []
    for raw_stream, raw_entries in reply:
        stream = raw_stream.decode("utf-8", "surrogateescape")
        entries = [_entry(stream, i, f) for i, f in raw_entries if f is not None]
        out.append((stream, entries))
    return out
