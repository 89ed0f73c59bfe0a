"""Waiting on a condition with a deadline (never sleep-and-hope): one helper, sync and async."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def wait_for(
    check: Callable[[], Awaitable[bool] | bool], timeout_s: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``check`` (sync or async) in the event loop until true, or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


def wait_sync(
    check: Callable[[], object],
    timeout_s: float = 10.0,
    what: str = "condition",
    step_s: float = 0.02,
) -> None:
    """Poll ``check`` until true, or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(step_s)
