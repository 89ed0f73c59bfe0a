"""The backend seam: everything the router loop asks of the store it routes on.

The loop (``consumer.Router``) plans with the pure core and talks to the store
only through ``Backend``: single Redis (``backends/redis.py``) and Redis Cluster
(``backends/cluster.py``) implement it today, Kafka is meant to be a third. The
loop never sees a connection, a command or a reply format; the backend never
sees a routing decision beyond the plan it is asked to commit.

Vocabulary, shared by every backend:

- a *source* is a stream (Redis) or a topic (Kafka); the *group* is the consumer
  group named in the table's settings; the *consumer* is this router's name in it;
- an *entry* is ``(id, flat fields)`` (``plan.Entry``): a Redis stream id, or
  ``<partition>-<offset>`` on Kafka; fields None when it vanished from the source;
- a ``Batch`` is entries of one source, with their delivery counts when they were
  delivered before (own pending, reclaimed, retried); None for a first delivery;
- an entry's *time* (``Batch.times_ms``, read by ``entry_times``) is when it was
  added to its source, the start of ``synapse_event_latency_seconds``: a Redis
  stream id carries it (``<ms>-<seq>``); a Kafka record has a timestamp
  (CreateTime, or LogAppendTime where the topic says so), which the backend hands
  over beside the entries;
- ``commit`` applies a ``BatchPlan`` (every copy and dead letter, then the
  acknowledgement of the entries whose writes all landed) and reports in a
  ``CommitResult`` the entries refused (left unacknowledged, nothing of them
  kept) and those found acknowledged already (nothing written twice).

Attempt counts come from the store (Redis's pending list; on Kafka the
``synapse.attempts`` topic, ``backends/kafkaattempts.py``), never from the
router's memory; the exception is the short backoff of a refused entry
(``retry_later``), which a restart forgets safely because the entry is then
re-delivered and counted.

What a backend raises, the loop hands back to its ``classify`` (an
``errors.Failure``), and ``retry.verdict`` decides: a lost connection or a
server-wide refusal backs off and marks the router not ready; a missing group
asks for ``setup`` again; anything else counts as a redelivery.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncGenerator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from synapse.config import RouterSettings, RoutingTable
from synapse.errors import Failure
from synapse.plan import BatchPlan, Entry

if TYPE_CHECKING:  # named in annotations only: the seam itself loads no I/O module
    import asyncio

    from synapse.registry import ServiceInfo


@dataclass(frozen=True, slots=True)
class Batch:
    """Entries of one source, in order, with their delivery counts if delivered before."""

    source: str
    entries: Sequence[Entry]
    deliveries: Mapping[bytes, int] | None = None
    #: Each entry's time (ms since the epoch), in ``entries``' order, when its id does
    #: not carry it (Kafka: the record's timestamp); None: the id's leading milliseconds.
    times_ms: Sequence[int] | None = None


def entry_times(
    entries: Sequence[Entry], times_ms: Sequence[int] | None, left_out: Collection[bytes] = ()
) -> Counter[int]:
    """How many of ``entries`` (but those in ``left_out``) were added at each millisecond:
    ``times_ms`` when the backend gave them, else each id's leading milliseconds (a Redis
    stream id, ``<ms>-<seq>``). Grouped, so a batch costs one observation per value."""
    if times_ms is None:
        by_id: Counter[bytes] = Counter(
            [e[0].partition(b"-")[0] for e in entries if e[0] not in left_out]
            if left_out
            else [e[0].partition(b"-")[0] for e in entries]
        )
        return Counter({int(ms): n for ms, n in by_id.items()})
    if left_out:
        return Counter([t for e, t in zip(entries, times_ms, strict=True) if e[0] not in left_out])
    return Counter(times_ms)


@dataclass(frozen=True, slots=True)
class CommitResult:
    """Entries the script could not write (left pending, nothing of them written), with
    the first error; entries it found acknowledged already (committed before: nothing
    written); and per failed entry, each refusing destination with its error."""

    failed: dict[bytes, str]
    skipped: frozenset[bytes] = frozenset()
    refused: dict[bytes, dict[str, str]] = field(default_factory=dict)


#: One read: a batch per source that had entries (possibly none).
Read = list[Batch]
#: Batches handed over one at a time (own pending, reclaimed, retried): the next page is
#: read only after the caller has committed this one.
Pages = AsyncGenerator[Batch, None]


class Presence(Protocol):
    """Keeps a service registration alive until stopped (``registry.Heartbeat``)."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


class Backend(Protocol):
    """What the router loop needs from a store. One instance per router process."""

    #: This router's consumer name in the group.
    consumer: str
    #: Which store: "redis", "cluster" or "kafka", for logs and tests.
    name: str

    async def start(self, settings: RouterSettings) -> str | None:
        """Check the store answers and take this consumer's name (Redis: a lease; raise
        ``ConsumerInUse`` if a live process holds it); the previous holder taken over,
        if any. Called at set-up and again every ``renew_s`` to keep the name."""
        ...

    def renew_s(self, settings: RouterSettings) -> float:
        """How often ``start`` must be called again to keep the consumer name."""
        ...

    async def discover(self, table: RoutingTable, *, create: bool) -> list[str]:
        """Resolve the table's source names and globs to sources; create missing groups
        (every source's with ``create``, else only new ones'); the sources now read."""
        ...

    async def read(
        self, settings: RouterSettings, sources: Sequence[str], block_ms: int
    ) -> Read | None:
        """New entries of every source, waiting up to ``block_ms`` for the first; None
        when the router stopped while waiting (nothing is lost: entries handed out stay
        with this consumer and come back from ``own_pending``)."""
        ...

    def read_ahead(
        self, settings: RouterSettings, sources: Sequence[str], previous: Read
    ) -> asyncio.Future[Read] | None:
        """The next read, already sent without waiting, when ``previous`` suggests a
        backlog; None when not worth it (or not possible: a cluster's per-slot reads)."""
        ...

    def commit(self, plan: BatchPlan, group: str) -> asyncio.Future[CommitResult]:
        """Start applying ``plan`` (writes, then the acknowledgement, atomically where the
        store can); it runs to the end even if the caller is cancelled. Raises (when
        awaited) if nothing could be decided: a connection error, a server refusal."""
        ...

    def own_pending(
        self, settings: RouterSettings, sources: Sequence[str], *, counted: bool
    ) -> Pages:
        """The entries handed to this consumer and not acknowledged (after a restart or
        an error); ``counted``: whether this re-read counts as a delivery (not after an
        outage: ``retry.py``)."""
        ...

    def reclaim(self, settings: RouterSettings, sources: Sequence[str]) -> Pages:
        """Entries idle longer than ``claim_idle_ms`` with any consumer, now ours."""
        ...

    def retry_later(self, source: str, entry_id: bytes, delay_s: float) -> None:
        """Leave a refused entry unacknowledged and hand it back in ``delay_s``."""
        ...

    def next_retry_s(self) -> float | None:
        """Seconds until the first entry is due again (0: one is due), None when none."""
        ...

    def retries_due(self, settings: RouterSettings) -> Pages:
        """The refused entries due again, re-delivered (their attempt counted)."""
        ...

    async def housekeep(self, settings: RouterSettings, sources: Sequence[str]) -> None:
        """Forget long-idle consumers with nothing pending (Redis); a no-op elsewhere."""
        ...

    def housekeep_s(self) -> float:
        """How often ``housekeep`` is due."""
        ...

    async def refresh_stats(self, table: RoutingTable, sources: Sequence[str]) -> None:
        """Lag and pending gauges: per source, and per consumer group of each destination."""
        ...

    async def trim_by_age(
        self, table: RoutingTable, sources: Sequence[str], now_ms: int
    ) -> dict[str, int]:
        """Retention by age (``max_age``) on every source and every stream the table writes,
        never past what the group still owes on a source; {stream: entries removed}.
        (Kafka: nothing, topics have their own retention.ms.)"""
        ...

    def classify(self, exc: BaseException) -> Failure:
        """The kind of failure ``exc`` (raised by this backend) is; ``INTERNAL`` if not
        the store's or the network's."""
        ...

    def presence(self, info: Callable[[], ServiceInfo]) -> Presence:
        """This router's entry in the service registry, kept alive while it runs."""
        ...

    async def reconfigure(self, old: RouterSettings, new: RouterSettings) -> None:
        """Settings changed by a reload (a new BLOCK time needs a new reader connection)."""
        ...

    async def interrupt(self) -> None:
        """Cancel reads in flight (before a drain of our own pending entries)."""
        ...

    async def farewell(self, settings: RouterSettings, sources: Sequence[str]) -> None:
        """On a clean stop: leave the group where nothing is pending; free the name."""
        ...

    async def close(self) -> None:
        """Close every connection."""
        ...
