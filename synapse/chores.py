"""Periodic chores of a loop: a timer per chore, checked between turns. Pure (the caller
passes the clock)."""

from __future__ import annotations


class Every:
    """Due when ``interval_s`` has passed since the chore last ran; due at once at first."""

    __slots__ = ("interval_s", "last_s")

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.last_s: float | None = None

    def due(self, now_s: float) -> bool:
        """Whether the chore is due at ``now_s``; if so, it counts as run at ``now_s``."""
        if self.last_s is not None and now_s - self.last_s < self.interval_s:
            return False
        self.last_s = now_s
        return True

    def ran(self, now_s: float) -> None:
        """The chore ran outside its schedule (e.g. during set-up): next due from now."""
        self.last_s = now_s


def every(interval_s: float) -> Every:
    """A timer for a chore that runs every ``interval_s`` seconds."""
    return Every(interval_s)
