"""The subscriber's I/O on Redis: the router's read machinery, for one service's group.

Everything the subscriber loop says to Redis goes through ``RedisStreams``, so a
backend seam can put another store behind the same methods. It reuses the router's
pieces as they are: ``reads.Reads`` (the blocking XREADGROUP on its own connection,
its read timeout outlasting BLOCK, cancelled at once on stop), ``pending.Pending``
(own pending entries first, XAUTOCLAIM of idle entries with deleted ones
acknowledged, delivery counts from the pending list), ``sources.ensure_group``
(BUSYGROUP is success; MKSTREAM), ``membership.forget`` / ``forget_idle`` (no
consumer names pile up in the group), and ``cluster.connect_any``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

from synapse import membership, sources, wire
from synapse.backoff import Backoff
from synapse.client.acks import Acks
from synapse.cluster import connect_any, is_cluster_url
from synapse.config import RouterSettings
from synapse.metrics import Metrics
from synapse.pending import Pending, Process
from synapse.plan import Entry
from synapse.reads import Reads

WRITE_TIMEOUT_S = 30.0


class RedisStreams:
    """One consumer of one group on a set of streams (each with its start policy)."""

    def __init__(
        self,
        url: str,
        *,
        password: str | None,
        settings: RouterSettings,
        starts: dict[str, str],
        process: Process,
        stopping: asyncio.Event,
        log: Any,
        backoff: Backoff,
    ) -> None:
        self.settings = settings
        self.starts = starts
        self.streams = list(starts)
        self.consumer = settings.consumer or ""
        self.cluster = is_cluster_url(url)
        self.stopping = stopping
        self.log = log
        self.metrics = Metrics()  # the reused pieces count into it (reclaimed, dropped)
        self.reads = Reads(
            url,
            password,
            self.consumer,
            settings.block_ms,
            cluster=self.cluster,
            stopping=stopping,
        )
        self.writer = connect_any(url, read_timeout_s=WRITE_TIMEOUT_S, password=password)
        self.pending = Pending(
            self.writer,
            self.consumer,
            process=process,
            stopping=stopping,
            metrics=self.metrics,
            log=log,
        )
        self.acks = Acks(
            self.writer, settings.group, cluster=self.cluster, log=log, backoff=backoff
        )

    async def setup(self) -> None:
        """Ping, create missing streams and groups, re-process our own pending entries."""
        await self.reads.cancel()
        await self.writer.ping()
        for stream, start in self.starts.items():
            settings = dataclasses.replace(self.settings, start=start)
            await sources.ensure_group(
                self.writer, settings, stream, mkstream=True, metrics=self.metrics, log=self.log
            )
        await self.pending.drain_own(self.settings, self.streams)

    async def read(self) -> Any:
        """One blocking read of new entries on every stream; None when stopped meanwhile."""
        return await self.reads.next(self.settings, self.streams)

    def read_ahead(self, reply: Any) -> asyncio.Future[Any] | None:
        """The next read, sent now without BLOCK, when ``reply`` filled a batch (else None)."""
        return self.reads.ahead(self.settings, self.streams, reply)

    async def reclaim(self) -> None:
        """Claim entries idle longer than claim_idle_ms from any consumer of the group."""
        await self.pending.reclaim(self.settings, self.streams)

    async def claim_again(self, stream: str, entry_id: bytes) -> tuple[Entry | None, int]:
        """Deliver one of our pending entries again (XCLAIM counts it): (entry, deliveries).

        (None, 0) when it is no longer pending (acknowledged or claimed meanwhile).
        """
        reply = await wire.execute(
            self.writer, "XCLAIM", stream, self.settings.group, self.consumer, 0, entry_id
        )
        if not reply:
            return None, 0
        entry = (reply[0][0], reply[0][1])
        counts = await self.pending.delivery_counts(stream, self.settings.group, [entry])
        return entry, counts.get(entry_id, 1)

    async def keep(self, stream: str, ids: Sequence[bytes], min_idle_ms: int) -> None:
        """Claim ``ids`` idle at least ``min_idle_ms`` again, counting no delivery (JUSTID)."""
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            await wire.execute(
                self.writer, "XCLAIM", stream, self.settings.group, self.consumer,
                min_idle_ms, *chunk, "JUSTID",
            )  # fmt: skip

    async def delivery_counts(self, stream: str, entries: Sequence[Entry]) -> dict[bytes, int]:
        return await self.pending.delivery_counts(stream, self.settings.group, entries)

    async def marked(self, keys: Sequence[str]) -> list[bool]:
        """Which dedupe marks exist (one MGET; a service's marks share one slot)."""
        if not keys:
            return []
        found = await self.writer.mget(list(keys))
        return [value is not None for value in found]

    async def forget_idle(self, forget_idle_ms: int) -> None:
        """Delete long-idle consumers of the group with nothing pending (not us)."""
        for stream in self.streams:
            gone = await membership.forget_idle(
                self.writer, stream, self.settings.group, self.consumer, forget_idle_ms
            )
            if gone:
                self.log.info("consumers_forgotten", stream=stream, consumers=gone)

    async def farewell(self) -> None:
        """On a clean stop: leave the group on each stream where we hold nothing pending."""
        for stream in self.streams:
            await membership.forget(self.writer, stream, self.settings.group, self.consumer, 0)

    async def close(self) -> None:
        await self.reads.close()
        await self.writer.aclose()
