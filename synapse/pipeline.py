"""How batches flow from the backend through planning to their commits.

Two ways, both one commit in flight at most, in the order the entries were read:

- ``route`` (new entries, the hot path): with a backlog (a read came back full),
  the next read is sent ahead (``Backend.read_ahead``) before this one is planned,
  and a commit is awaited only once the next batch is planned, so the router plans
  batch k+1 while the store applies batch k. It goes on for at most
  ``PIPELINE_MAX_S``, then returns to the loop's chores; it sends no further read
  while ``hold`` is set (a table swap waits) or the router stops.
- ``each`` (own pending, reclaimed, retried): one page at a time; the backend reads
  the next page only after this one is committed.

Nothing is in flight when either returns. Entries read ahead but not committed
after an error stay with this consumer: the set-up after the error handles them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from synapse.backend import Backend, Pages, Read
from synapse.batches import Batches, InFlight
from synapse.plan import Planner

#: Longest stretch of read-ahead pipelining before the loop returns to its chores.
PIPELINE_MAX_S = 1.0


class Pipeline:
    """Feeds the batches a backend hands over to ``Batches``, keeping the store busy."""

    def __init__(self, backend: Backend, batches: Batches) -> None:
        self.backend = backend
        self.batches = batches
        #: Set while a table swap waits: no further read is sent ahead.
        self.hold = False

    async def route(self, planner: Planner, sources: Sequence[str], read: Read) -> None:
        """Plan and commit ``read``; while reads come back full, read ahead (see above)."""
        settings = planner.table.settings
        deadline = time.monotonic() + PIPELINE_MAX_S
        ahead: asyncio.Future[Read] | None = None
        inflight: InFlight | None = None
        try:
            while read:
                if time.monotonic() < deadline and not self.hold:
                    ahead = self.backend.read_ahead(settings, sources, read)
                    if ahead is not None:
                        await asyncio.sleep(0)  # on the wire before we plan, not after
                for batch in read:
                    if not batch.entries:
                        continue
                    planned = self.batches.plan(planner, batch)
                    if inflight is not None:
                        done, inflight = inflight, None
                        await self.batches.finish(done)
                    inflight = self.batches.send(planned)
                    await asyncio.sleep(0)  # the store applies it while we plan the next
                if ahead is None:
                    break
                read, ahead = await ahead, None
        finally:
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await ahead
            if inflight is not None:
                await self.batches.finish(inflight)

    async def each(self, planner: Planner, pages: Pages) -> None:
        """Plan and commit each batch of ``pages``, one at a time."""
        async with contextlib.aclosing(pages) as batches:
            async for batch in batches:
                if batch.entries:
                    await self.batches.finish(self.batches.send(self.batches.plan(planner, batch)))
