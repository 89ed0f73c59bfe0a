"""New entries: XREADGROUP ``>`` on every source, on a connection of its own.

The reader's read timeout outlasts the BLOCK time by 5 s, so a half-open socket
is noticed; a stop cancels a blocked read at once. With a backlog, the next read
is sent without BLOCK before the batch in hand is planned (``ahead``). After a
read that came back neither empty nor full, the next one waits ``linger_ms``
first (a stop ends the wait at once), so that a trickle of events is read in
fuller batches: fewer round trips per event for the router and the server, at
up to ``linger_ms`` of added latency. On a cluster the reads go per hash slot
instead (``cluster.SlotReads``, on this reader connection; no linger there).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from synapse import wire
from synapse.backend import Batch, Read
from synapse.config import RouterSettings
from synapse.plan import ReadReply


def batches_of(reply: ReadReply | None) -> Read:
    """An XREADGROUP reply as one ``Batch`` per source that had entries."""
    return [Batch(stream.decode(), entries) for stream, entries in reply or () if entries]


class Reads:
    """Reads for one consumer name; ``client`` is the reader connection."""

    def __init__(
        self,
        url: str,
        password: str | None,
        consumer: str,
        block_ms: int,
        *,
        stopping: asyncio.Event,
    ) -> None:
        self.url = url
        self.password = password
        self.consumer = consumer
        self.stopping = stopping
        self.client = self._connect(block_ms)
        #: The last read came back with entries but no full batch: the next one lingers.
        self.unfilled = False

    def _connect(self, block_ms: int) -> wire.Client:
        """The blocking-read client: its read timeout outlasts BLOCK by 5 s."""
        block_s = block_ms / 1000
        return wire.connect_any(self.url, read_timeout_s=block_s + 5.0, password=self.password)

    async def reconnect(self, block_ms: int) -> None:
        """A new reader connection, whose read timeout outlasts the new BLOCK time."""
        retired, self.client = self.client, self._connect(block_ms)
        await retired.aclose()

    async def close(self) -> None:
        await self.client.aclose()

    async def next(
        self, settings: RouterSettings, sources: Sequence[str], block_ms: int | None = None
    ) -> Read | None:
        """XREADGROUP ... > on every source, blocking up to ``block_ms`` (shorter than the
        setting when a retry is due sooner); None when stopped while blocked or lingering."""
        if self.unfilled and settings.linger_ms and not await self._linger(settings, block_ms):
            return None
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
        return self._noted(settings, batches_of(read.result()))

    async def _linger(self, settings: RouterSettings, block_ms: int | None) -> bool:
        """Wait ``linger_ms`` (never longer than this read may block); False if stopped."""
        wait_ms = settings.linger_ms if block_ms is None else min(settings.linger_ms, block_ms)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), wait_ms / 1000)
        return not self.stopping.is_set()

    def _noted(self, settings: RouterSettings, read: Read) -> Read:
        """``read``, noting whether the next read should linger (see the module doc)."""
        self.unfilled = bool(read) and all(len(b.entries) < settings.batch for b in read)
        return read

    def ahead(
        self, settings: RouterSettings, sources: Sequence[str], previous: Read
    ) -> asyncio.Future[Read] | None:
        """The next read, sent without BLOCK, if a backlog is likely, else None.

        A backlog is likely when a source filled its batch and no stop waits.
        """
        if self.stopping.is_set():
            return None
        if not any(len(batch.entries) >= settings.batch for batch in previous):
            return None
        args = self._args(settings, sources, block=False)
        return asyncio.ensure_future(self._read(settings, args))

    async def _read(self, settings: RouterSettings, args: tuple[Any, ...]) -> Read:
        return self._noted(settings, batches_of(await wire.execute(self.client, *args)))

    def _args(
        self,
        settings: RouterSettings,
        sources: Sequence[str],
        block: bool,
        block_ms: int | None = None,
    ) -> tuple[Any, ...]:
        head = group_read(settings, self.consumer, block=block, block_ms=block_ms)
        return (*head, "STREAMS", *sources, *(">",) * len(sources))


def group_read(
    settings: RouterSettings, consumer: str, *, block: bool, block_ms: int | None = None
) -> tuple[Any, ...]:
    """XREADGROUP for ``consumer`` of up to ``batch`` entries, up to (excluding) STREAMS."""
    wait = ("BLOCK", settings.block_ms if block_ms is None else block_ms) if block else ()
    return ("XREADGROUP", "GROUP", settings.group, consumer, "COUNT", settings.batch, *wait)
