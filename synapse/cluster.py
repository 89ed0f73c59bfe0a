"""Redis Cluster slot I/O: one blocking XREADGROUP per hash slot of the sources.

A multi-key XREADGROUP must keep to one hash slot, so the sources are read with
one blocking read per slot group (``SlotReads``), kept in flight across turns so
a busy slot never waits on an idle one. The rest of the cluster story lives
beside it: the client set-up in ``wire.py``, slots in ``slots.py``, the commit in
``clustercommit.py`` (atomic where one slot holds an entry's writes, else write
then ack), and ``synapse check --cluster``'s analysis in ``slotcheck.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from synapse import wire
from synapse.slots import group_by_slot


class SlotReads:
    """One blocking XREADGROUP per slot group of sources, kept in flight across turns."""

    def __init__(self) -> None:
        self.tasks: dict[tuple[str, ...], asyncio.Future[Any]] = {}

    async def next(
        self,
        client: wire.Client,
        args: Sequence[Any],
        sources: Sequence[str],
        stopping: asyncio.Event,
    ) -> list[Any] | None:
        """Entries of the slots that answered first; None when stopping.

        ``args`` is the XREADGROUP up to and excluding ``STREAMS``.
        """
        wanted = group_by_slot(sources)
        for streams in [g for g in self.tasks if g not in wanted]:
            self.tasks.pop(streams).cancel()
        for streams in wanted:
            if streams not in self.tasks:
                command = (*args, "STREAMS", *streams, *(">",) * len(streams))
                self.tasks[streams] = asyncio.ensure_future(wire.execute(client, *command))
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({*self.tasks.values(), stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if stopping.is_set():
            await self.cancel()
            return None
        out: list[Any] = []
        error: BaseException | None = None
        for streams, task in list(self.tasks.items()):
            if not task.done():
                continue
            del self.tasks[streams]
            if task.exception() is not None:
                error = error or task.exception()
            elif task.result():
                out.extend(task.result())
        if error is not None:
            # Entries another slot delivered stay in our pending list: drained on setup.
            raise error
        return out

    async def cancel(self) -> None:
        """Cancel reads in flight (entries already delivered stay pending, never lost)."""
        tasks, self.tasks = list(self.tasks.values()), {}
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
