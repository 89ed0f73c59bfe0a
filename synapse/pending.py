"""Pending entries: our own after a restart, refused ones due for a retry, anyone's idle
ones, and their delivery counts.

Entries delivered to the group but not acknowledged are processed again: first
those already delivered to our consumer name, then, on an interval, those idle
longer than ``claim_idle_ms`` in any consumer's list (XAUTOCLAIM, cursor followed
to ``0-0``; ids deleted meanwhile are acknowledged and counted). Each is replanned
with its delivery count, read from the pending list: attempt counts never live in
this process's memory (only when a refused entry is due again does).

Which re-reads count as a delivery (``retry.py``): our own pending entries are
re-read with a history read (``XREADGROUP ... 0``, counted) only when this process
starts or after an error that may have come from an entry; after an outage
(connection lost, OOM, READONLY...) they are re-read by ``READ_OWN_LUA``, which
reads the pending list and the entries without counting, so an outage never uses
up attempts. A refused entry's retry is an ``XCLAIM`` (counted): only its attempts
count, not its batch's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from synapse import log as logging
from synapse import wire
from synapse.backend import Batch, Pages
from synapse.config import RouterSettings
from synapse.metrics import Metrics
from synapse.plan import Entry
from synapse.reads import group_read

# Our pending entries after ``ARGV[3]`` (exclusive, or '-'), up to ARGV[4] of them, with
# their delivery counts and fields (false: deleted from the stream), read without
# counting a delivery. KEYS[1]: the source; ARGV: group, consumer, start, count.
READ_OWN_LUA = """#!lua flags=no-writes
local rows = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], '+', tonumber(ARGV[4]), ARGV[2])
local out = {}
for _, row in ipairs(rows) do
  local found = redis.call('XRANGE', KEYS[1], row[1], row[1])
  local fields = false
  if found[1] then fields = found[1][2] end
  out[#out + 1] = {row[1], row[4], fields}
end
return out
"""


class Pending:
    """The group's pending list as one consumer name works it, on one connection."""

    def __init__(
        self,
        client: wire.Client,
        consumer: str,
        *,
        stopping: asyncio.Event,
        metrics: Metrics,
        log: logging.Logger,
    ) -> None:
        self.client = client
        self.consumer = consumer
        self.stopping = stopping
        self.metrics = metrics
        self.log = log
        #: (source, entry id) -> (when due, monotonic s; its backoff, s): refused entries.
        self.due: dict[tuple[str, bytes], tuple[float, float]] = {}

    async def drain_own(
        self, settings: RouterSettings, sources: Sequence[str], *, count: bool = True
    ) -> Pages:
        """Re-process entries already delivered to this consumer name (after a restart,
        or a reconnect); ``count``: whether this re-read counts as a delivery."""
        self.due.clear()  # every one of them is re-processed now
        for source in sources:
            if not count:
                async for batch in self._drain_uncounted(settings, source):
                    yield batch
                continue
            last = b"0"
            while not self.stopping.is_set():
                read = group_read(settings, self.consumer, block=False)
                reply = await wire.execute(self.client, *read, "STREAMS", source, last)
                entries = reply[0][1] if reply else []
                if not entries:
                    break
                last = entries[-1][0]
                counts = await self.delivery_counts(source, settings.group, entries)
                yield Batch(source, entries, counts)

    async def _drain_uncounted(self, settings: RouterSettings, source: str) -> Pages:
        start = b"-"
        while not self.stopping.is_set():
            rows = await wire.execute(
                self.client,
                "EVAL",
                READ_OWN_LUA,
                1,
                source,
                settings.group,
                self.consumer,
                start,
                settings.batch,
            )
            if not rows:
                return
            entries: list[Entry] = [(row[0], row[2] or None) for row in rows]
            counts = {row[0]: int(row[1]) for row in rows}
            yield Batch(source, entries, counts)
            start = b"(" + rows[-1][0]

    # -- refused entries, retried after a backoff -------------------------------------

    def schedule(self, source: str, entry_id: bytes, delay_s: float) -> None:
        """Retry ``entry_id`` of ``source`` (left pending, refused) in ``delay_s``."""
        self.due[(source, entry_id)] = (time.monotonic() + delay_s, delay_s)

    def next_due_s(self) -> float | None:
        """Seconds until the first scheduled retry (0 when one is due), None when none."""
        if not self.due:
            return None
        return max(0.0, min(at for at, _ in self.due.values()) - time.monotonic())

    async def retry_due(self, settings: RouterSettings) -> Pages:
        """Claim the refused entries whose backoff is over (XCLAIM: a counted delivery)
        and process them again. One still idle for less than its backoff (a peer
        claimed it meanwhile) is left to whoever holds it."""
        now = time.monotonic()
        ready = [key for key, (at, _) in self.due.items() if at <= now]
        by_source: dict[str, list[bytes]] = {}
        min_idle: dict[str, int] = {}
        for key in ready:
            _, delay_s = self.due.pop(key)
            by_source.setdefault(key[0], []).append(key[1])
            idle_ms = int(delay_s * 1000 * 0.9)
            min_idle[key[0]] = min(min_idle.get(key[0], idle_ms), idle_ms)
        for source, ids in by_source.items():
            for start in range(0, len(ids), settings.batch):
                chunk = ids[start : start + settings.batch]
                claimed = await wire.execute(
                    self.client,
                    "XCLAIM",
                    source,
                    settings.group,
                    self.consumer,
                    min_idle[source],
                    *chunk,
                )
                live = [e for e in claimed if e and e[1] is not None]
                await self._count_deleted(source, set(chunk) - {e[0] for e in live})
                if live:
                    counts = await self.delivery_counts(source, settings.group, live)
                    yield Batch(source, live, counts)

    async def _count_deleted(self, source: str, missing: set[bytes]) -> None:
        """Of the ids XCLAIM did not return, count those deleted from the stream (XCLAIM
        drops them from the pending list); the others were committed or claimed meanwhile."""
        deleted = 0
        for entry_id in missing:
            if not await wire.execute(self.client, "XRANGE", source, entry_id, entry_id):
                deleted += 1
        if deleted:
            self.metrics.dropped.labels("deleted").inc(deleted)
            self.log.warning("pending_entries_deleted", source=source, count=deleted)

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

    async def reclaim(self, settings: RouterSettings, sources: Sequence[str]) -> Pages:
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
                for entry in (*claimed, *((d, None) for d in deleted)):
                    self.due.pop((source, entry[0]), None)  # handled here, not by a retry
                if deleted:
                    # Trimmed or deleted before they were processed: acknowledge, count.
                    await wire.execute(self.client, "XACK", source, s.group, *deleted)
                    self.metrics.dropped.labels("deleted").inc(len(deleted))
                    self.log.warning("pending_entries_deleted", source=source, count=len(deleted))
                live = [e for e in claimed if e[1] is not None]
                if live:
                    self.metrics.reclaimed.inc(len(live))
                    counts = await self.delivery_counts(source, s.group, live)
                    yield Batch(source, live, counts)
                if cursor == b"0-0":
                    break


def _id_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)
