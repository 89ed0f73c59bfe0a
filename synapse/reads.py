"""New entries: XREADGROUP ``>`` on every source, on a connection of its own.

The reader's read timeout outlasts the BLOCK time by 5 s, so a half-open socket
is noticed; a stop cancels a blocked read at once. On a cluster, one blocking
read per hash slot (``cluster.SlotReads``), the first answers taken. With a
backlog, the next read is sent without BLOCK before the batch in hand is
planned (``ahead``; not on a cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from synapse import wire
from synapse.cluster import SlotReads, connect_any
from synapse.config import RouterSettings
from synapse.plan import ReadReply


class Reads:
    """Reads for one consumer name; ``client`` is the reader connection."""

    def __init__(
        self,
        url: str,
        password: str | None,
        consumer: str,
        block_ms: int,
        *,
        cluster: bool,
        stopping: asyncio.Event,
    ) -> None:
        self.url = url
        self.password = password
        self.consumer = consumer
        self.cluster = cluster
        self.stopping = stopping
        self.client = self._connect(block_ms)
        self._slot_reads = SlotReads()

    def _connect(self, block_ms: int) -> wire.Client:
        """The blocking-read client: its read timeout outlasts BLOCK by 5 s."""
        block_s = block_ms / 1000
        return connect_any(self.url, read_timeout_s=block_s + 5.0, password=self.password)

    async def reconnect(self, block_ms: int) -> None:
        """A new reader connection, whose read timeout outlasts the new BLOCK time."""
        await self._slot_reads.cancel()
        retired, self.client = self.client, self._connect(block_ms)
        await retired.aclose()

    async def cancel(self) -> None:
        """Cancel the per-slot reads in flight (on a cluster; else nothing is in flight)."""
        await self._slot_reads.cancel()

    async def close(self) -> None:
        await self._slot_reads.cancel()
        await self.client.aclose()

    async def next(
        self, settings: RouterSettings, sources: Sequence[str], block_ms: int | None = None
    ) -> ReadReply | None:
        """One blocking read of every source (``block_ms``: shorter than the setting when a
        retry is due sooner; not on a cluster); None when stopped while blocked."""
        if self.cluster:
            return await self._read_slots(settings, sources)
        return await self._read_new(settings, sources, block_ms)

    def ahead(
        self, settings: RouterSettings, sources: Sequence[str], reply: ReadReply
    ) -> asyncio.Future[ReadReply] | None:
        """The next read, sent without BLOCK, if a backlog is likely, else None.

        A backlog is likely when a source filled its batch and no stop waits. Not
        on a cluster: its reads go per slot (``_read_slots``).
        """
        if self.cluster or self.stopping.is_set():
            return None
        if not any(len(entries) >= settings.batch for _, entries in reply):
            return None
        args = self._args(settings, sources, block=False)
        return asyncio.ensure_future(wire.execute(self.client, *args))

    def _args(
        self,
        settings: RouterSettings,
        sources: Sequence[str],
        block: bool,
        block_ms: int | None = None,
    ) -> tuple[Any, ...]:
        head = group_read(settings, self.consumer, block=block, block_ms=block_ms)
        return (*head, "STREAMS", *sources, *(">",) * len(sources))

    async def _read_new(
        self, settings: RouterSettings, sources: Sequence[str], block_ms: int | None
    ) -> ReadReply | None:
        """XREADGROUP ... > on every source; cancelled promptly when stopping."""
        args = self._args(settings, sources, block=True, block_ms=block_ms)
        read = asyncio.ensure_future(wire.execute(self.client, *args))
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not read.done():
            # Stopping while blocked: entries the server may have handed us stay in our
            # pending list and are reclaimed (never lost).
            read.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await read
            return None
        reply: ReadReply | None = read.result()  # raw: as the server sent it
        return reply

    async def _read_slots(
        self, settings: RouterSettings, sources: Sequence[str]
    ) -> ReadReply | None:
        """On a cluster: one blocking XREADGROUP per hash slot, the first answers taken."""
        args = group_read(settings, self.consumer, block=True)
        return await self._slot_reads.next(self.client, args, sources, self.stopping)


def group_read(
    settings: RouterSettings, consumer: str, *, block: bool, block_ms: int | None = None
) -> tuple[Any, ...]:
    """XREADGROUP for ``consumer`` of up to ``batch`` entries, up to (excluding) STREAMS."""
    wait = ("BLOCK", settings.block_ms if block_ms is None else block_ms) if block else ()
    return ("XREADGROUP", "GROUP", settings.group, consumer, "COUNT", settings.batch, *wait)
