"""The Redis Cluster backend: the single-Redis backend, read and committed slot by slot.

``redis+cluster://host:port`` names any node (``wire.connect_any``). A multi-key
XREADGROUP and a Lua script must keep to one hash slot, so two things differ from
one server, and nothing else:

- reads: one blocking XREADGROUP per slot group of the sources, kept in flight
  across turns so a busy slot never waits on an idle one (``cluster.SlotReads``);
  no read-ahead (the per-slot reads already overlap);
- commits: atomic where every write of an entry shares its source's slot, else
  written, then acknowledged (``clustercommit.py``; at-least-once across a crash,
  ``synapse-source`` + ``synapse-id`` are the dedupe key).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from synapse.backend import CommitResult, Read
from synapse.backends.redis import RedisBackend
from synapse.cluster import SlotReads
from synapse.clustercommit import commit_cluster
from synapse.config import RouterSettings
from synapse.plan import BatchPlan
from synapse.reads import batches_of, group_read


class ClusterBackend(RedisBackend):
    """Routes on a Redis Cluster (``redis+cluster://``, ``rediss+cluster://``)."""

    name = "cluster"

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.slot_reads = SlotReads()

    async def read(
        self, settings: RouterSettings, sources: Sequence[str], block_ms: int
    ) -> Read | None:
        """The slots that answered first (each read blocks ``settings.block_ms``: a read
        kept in flight across turns cannot be shortened for a retry due sooner)."""
        args = group_read(settings, self.consumer, block=True)
        reply = await self.slot_reads.next(self.reads.client, args, sources, self.stopping)
        return None if reply is None else batches_of(reply)

    def read_ahead(
        self, settings: RouterSettings, sources: Sequence[str], previous: Read
    ) -> asyncio.Future[Read] | None:
        return None

    def commit(self, plan: BatchPlan, group: str) -> asyncio.Future[CommitResult]:
        return asyncio.ensure_future(commit_cluster(self.client, plan, group))

    async def reconfigure(self, old: RouterSettings, new: RouterSettings) -> None:
        if old.block_ms != new.block_ms:
            await self.slot_reads.cancel()
        await super().reconfigure(old, new)

    async def interrupt(self) -> None:
        """Cancel the per-slot reads in flight (entries delivered stay pending)."""
        await self.slot_reads.cancel()

    async def close(self) -> None:
        await self.slot_reads.cancel()
        await super().close()
