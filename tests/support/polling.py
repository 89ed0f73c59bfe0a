"""Waiting on a condition with a deadline (never sleep-and-hope): one helper, sync and async."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

#: What is awaited, for the failure message: text, or a function called only on failure
#: (to show the state at the deadline).
What = str | Callable[[], str]


def _timed_out(timeout_s: float, what: What) -> AssertionError:
    text = what() if callable(what) else what
    return AssertionError(f"timed out after {timeout_s}s waiting for {text}")


async def wait_for(
    check: Callable[[], Awaitable[bool] | bool], timeout_s: float = 10.0, what: What = "condition"
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
            raise _timed_out(timeout_s, what)
        await asyncio.sleep(0.02)


def wait_sync(
    check: Callable[[], object],
    timeout_s: float = 10.0,
    what: What = "condition",
    step_s: float = 0.02,
) -> None:
    """Poll ``check`` until true, or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise _timed_out(timeout_s, what)
        time.sleep(step_s)
