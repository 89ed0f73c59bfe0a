"""The consuming services' side: lag and pending of every consumer group on the destinations.

The router already reads XINFO GROUPS of its sources (``sources.refresh_stats``). The
services that consume its destinations have groups of their own; a stuck service shows as
its group's lag growing on a destination. Read on the same interval (every 5 s, not per
batch), exported as ``synapse_consumer_group_lag{stream,group}`` and
``synapse_consumer_group_pending{stream,group}``; a group that goes away loses its series.
Labels stay bounded: the table's destinations times their groups.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from redis.exceptions import ResponseError

from synapse import wire
from synapse.metrics import Metrics


class GroupStats:
    """Refreshes the consumer-group gauges of the destinations; remembers what it exported."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._seen: set[tuple[str, str]] = set()

    async def refresh(self, client: wire.Client, streams: Iterable[str]) -> None:
        seen: set[tuple[str, str]] = set()
        for stream in sorted(streams):
            try:
                groups = await client.xinfo_groups(stream)
            except ResponseError:  # no such stream (yet)
                continue
            for info in groups:
                name = info.get("name")
                group = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
                seen.add((stream, group))
                self.metrics.group_pending.labels(stream, group).set(info.get("pending") or 0)
                lag = info.get("lag")
                if lag is not None:  # nil when entries were deleted or trimmed unread
                    self.metrics.group_lag.labels(stream, group).set(lag)
        for stream, group in self._seen - seen:
            for gauge in (self.metrics.group_lag, self.metrics.group_pending):
                with contextlib.suppress(KeyError):
                    gauge.remove(stream, group)
        self._seen = seen
