"""The subscriber's I/O on Redis: the router's backend, for one service's group.

Everything the subscriber loop says to Redis goes through ``RedisStreams``. Where
the router's backend seam fits, it is used as it is (``backends.open_redis``:
single Redis or Redis Cluster by URL): the blocking read of new entries on its
own connection (read timeout outlasting BLOCK, cancelled at once on stop, with
read-ahead on a backlog), own pending entries first, XAUTOCLAIM of idle entries
with deleted ones acknowledged, delivery counts from the pending list, long-idle
consumers forgotten, leaving the group on a clean stop, and ``classify`` of what
Redis raised. Group creation is ``sources.ensure_group`` (BUSYGROUP is success;
MKSTREAM), per stream with its own start policy. What only a subscriber does
stays here: re-claiming the entries its slow handlers hold (JUSTID), claiming one
entry again for a handler's retry, dedupe marks, and the outcomes it writes
(``acks.py``: acks, dead letters and marks, not a routing plan).

``RedisStore`` is the Redis side of the client's seam (``seam.py``): the writer
connection of one event loop, XADD with the same fields on retry (``Publisher``),
the registry heartbeat (``registry.Heartbeat``), and ``RedisStreams``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from synapse import keys, registry, sources, wire
from synapse.backend import Pages, Presence, Read
from synapse.backends import open_redis
from synapse.backoff import Backoff
from synapse.client.acks import Acks
from synapse.config import RouterSettings
from synapse.errors import Failure
from synapse.metrics import Metrics
from synapse.plan import Entry
from synapse.registry import ServiceInfo

if TYPE_CHECKING:
    from synapse.client.publisher import Item, Publisher

WRITE_TIMEOUT_S = 30.0


class RedisStore:
    """A Bus on Redis (single or cluster by URL): one writer connection per event loop."""

    kind = "redis"
    default_dead_letter = keys.DEFAULT_DEAD_LETTER

    def __init__(self, url: str, *, password: str | None) -> None:
        self.url = url
        self.password = password
        self.client = wire.connect_any(url, read_timeout_s=WRITE_TIMEOUT_S, password=password)

    def retry_stream(self, service: str) -> str:
        return keys.retry_stream(service)

    async def publish(
        self,
        publisher: Publisher,
        event: Any,
        data: dict[str, Any] | None,
        *,
        stream: str | None,
        event_id: str | None,
        extra: dict[str, str] | None,
        key: bytes | None,
    ) -> str:
        """One XADD (``key`` changes nothing: a stream is one ordered log)."""
        return await publisher.publish(
            self.client, event, data, stream=stream, event_id=event_id, extra=extra
        )

    async def publish_many(
        self, publisher: Publisher, items: Iterable[Item], *, stream: str | None, key: bytes | None
    ) -> list[str]:
        return await publisher.publish_many(self.client, items, stream=stream)

    def presence(self, info: Callable[[], ServiceInfo], ttl_s: float) -> Presence:
        return registry.Heartbeat(self.client, info, ttl_s)

    def streams(
        self,
        *,
        settings: RouterSettings,
        starts: dict[str, str],
        stopping: asyncio.Event,
        log: Any,
        backoff: Backoff,
    ) -> RedisStreams:
        return RedisStreams(
            self.url,
            password=self.password,
            settings=settings,
            starts=starts,
            stopping=stopping,
            log=log,
            backoff=backoff,
        )

    async def close(self) -> None:
        await self.client.aclose()


class RedisStreams:
    """One consumer of one group on a set of streams (each with its start policy)."""

    def __init__(
        self,
        url: str,
        *,
        password: str | None,
        settings: RouterSettings,
        starts: dict[str, str],
        stopping: asyncio.Event,
        log: Any,
        backoff: Backoff,
    ) -> None:
        self.settings = settings
        self.starts = starts
        self.streams = list(starts)
        self.consumer = settings.consumer or ""
        self.stopping = stopping
        self.log = log
        self.metrics = Metrics()  # the reused pieces count into it (reclaimed, dropped)
        self.backend = open_redis(
            url,
            consumer=self.consumer,
            password=password,
            block_ms=settings.block_ms,
            metrics=self.metrics,
            stopping=stopping,
            log=log,
        )
        self.writer = self.backend.client
        self.cluster = wire.is_cluster_url(url)
        self.acks = Acks(
            self.writer, settings.group, cluster=self.cluster, log=log, backoff=backoff
        )

    async def setup(self) -> None:
        """Ping, create missing streams and groups (then ``own_pending``, first)."""
        await self.backend.interrupt()
        await self.writer.ping()
        for stream, start in self.starts.items():
            settings = dataclasses.replace(self.settings, start=start)
            await sources.ensure_group(
                self.writer, settings, stream, mkstream=True, metrics=self.metrics, log=self.log
            )

    def own_pending(self) -> Pages:
        """Our own pending entries (after a start or an error), with their delivery counts."""
        return self.backend.own_pending(self.settings, self.streams, counted=True)

    async def read(self) -> Read | None:
        """One blocking read of new entries on every stream; None when stopped meanwhile."""
        return await self.backend.read(self.settings, self.streams, self.settings.block_ms)

    def read_ahead(self, previous: Read) -> asyncio.Future[Read] | None:
        """The next read, sent now without BLOCK, when ``previous`` filled a batch (else None)."""
        return self.backend.read_ahead(self.settings, self.streams, previous)

    def reclaim(self) -> Pages:
        """Entries idle longer than claim_idle_ms with any consumer of the group, now ours."""
        return self.backend.reclaim(self.settings, self.streams)

    def classify(self, exc: BaseException) -> Failure:
        """What kind of failure ``exc`` is (the router's ``classify``)."""
        return self.backend.classify(exc)

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
        counts = await self.backend.pending.delivery_counts(stream, self.settings.group, [entry])
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
        return await self.backend.pending.delivery_counts(stream, self.settings.group, entries)

    async def marked(self, keys: Sequence[str]) -> list[bool]:
        """Which dedupe marks exist (one MGET; a service's marks share one slot)."""
        if not keys:
            return []
        found = await self.writer.mget(list(keys))
        return [value is not None for value in found]

    async def forget_idle(self) -> None:
        """Delete long-idle consumers of the group with nothing pending (not us)."""
        await self.backend.housekeep(self.settings, self.streams)

    async def farewell(self) -> None:
        """On a clean stop: leave the group on each stream where we hold nothing pending."""
        await self.backend.farewell(self.settings, self.streams)

    async def close(self) -> None:
        await self.backend.close()
