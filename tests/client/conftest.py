"""Client fixtures: a Bus running in this event loop until the block exits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from synapse.client import Bus
from tests.conftest import wait_for


@contextlib.asynccontextmanager
async def serving(bus: Bus) -> AsyncIterator[Bus]:
    """Run ``bus`` (its subscriptions) until the block exits; then stop it and wait."""
    task = asyncio.create_task(bus.run())
    try:
        await wait_for(
            lambda: (bus.subscriber is not None and bus.subscriber.ready) or task.done(),
            what="subscriber ready",
        )
        if task.done():
            task.result()
        yield bus
    finally:
        bus.stop()
        await asyncio.wait_for(task, 30)
