"""Pending entries: our own after a restart, anyone's idle ones, their delivery counts.

Entries delivered to the group but not acknowledged are processed again: first
those already delivered to our consumer name (history reads from id 0), then,
on an interval, those idle longer than ``claim_idle_ms`` in any consumer's list
(XAUTOCLAIM, cursor followed to ``0-0``; ids deleted meanwhile are acknowledged
and counted). Each is replanned with its delivery count, read from the pending
list: attempt counts never live in this process's memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from synapse import wire
from synapse.config import RouterSettings
from synapse.metrics import Metrics
from synapse.plan import Entry
from synapse.reads import group_read

#: Plans and commits one source's entries, given their delivery counts.
Process = Callable[[str, Sequence[Entry], dict[bytes, int] | None], Awaitable[None]]


class Pending:
    """The group's pending list as one consumer name works it, on one connection."""

    def __init__(
        self,
        client: wire.Client,
        consumer: str,
        *,
        process: Process,
        stopping: asyncio.Event,
        metrics: Metrics,
        log: Any,
    ) -> None:
        self.client = client
        self.consumer = consumer
        self.process = process
        self.stopping = stopping
        self.metrics = metrics
        self.log = log

    async def drain_own(self, settings: RouterSettings, sources: Sequence[str]) -> None:
        """Re-process entries already delivered to this consumer name (after a restart)."""
        for source in sources:
            last = b"0"
            while not self.stopping.is_set():
                read = group_read(settings, self.consumer, block=False)
                reply = await wire.execute(self.client, *read, "STREAMS", source, last)
                entries = reply[0][1] if reply else []
                if not entries:
                    break
                last = entries[-1][0]
                counts = await self.delivery_counts(source, settings.group, entries)
                await self.process(source, entries, counts)

    async def delivery_counts(
        self, source: str, group: str, entries: Sequence[Entry]
    ) -> dict[bytes, int]:
        """Delivery counts of ``entries`` from the group's pending list.

        Pages through our pending entries between the lowest and highest id, so
        other pending entries of ours in that range never hide a count.
        """
        wanted = {e[0] for e in entries}
        counts: dict[bytes, int] = {}
        start: bytes = min(wanted, key=_id_key)
        end: bytes = max(wanted, key=_id_key)
        page = max(len(wanted), 100)
        while True:
            reply = await wire.execute(
                self.client,
                "XPENDING",
                source,
                group,
                start,
                end,
                page,
                self.consumer,
            )
            for row in reply:
                if row[0] in wanted:
                    counts[row[0]] = int(row[3])
            if len(reply) < page or len(counts) == len(wanted):
                return counts
            start = b"(" + reply[-1][0]

    async def reclaim(self, settings: RouterSettings, sources: Sequence[str]) -> None:
        """Claim entries idle longer than claim_idle_ms from any consumer (ourselves too)."""
        s = settings
        for source in sources:
            cursor = b"0-0"
            while not self.stopping.is_set():
                reply = await wire.execute(
                    self.client,
                    "XAUTOCLAIM",
                    source,
                    s.group,
                    self.consumer,
                    s.claim_idle_ms,
                    cursor,
                    "COUNT",
                    s.batch,
                )
                cursor, claimed = reply[0], reply[1]
                deleted = reply[2] if len(reply) > 2 else []
                if deleted:
                    # Trimmed or deleted before they were processed: acknowledge, count.
                    await wire.execute(self.client, "XACK", source, s.group, *deleted)
                    self.metrics.dropped.labels("deleted").inc(len(deleted))
                    self.log.warning("pending_entries_deleted", source=source, count=len(deleted))
                live = [e for e in claimed if e[1] is not None]
                if live:
                    self.metrics.reclaimed.inc(len(live))
                    counts = await self.delivery_counts(source, s.group, live)
                    await self.process(source, live, counts)
                if cursor == b"0-0":
                    break


def _id_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)
