"""Redis Cluster: connect by URL, place keys in hash slots, read and commit slot by slot.

``redis+cluster://host:port`` (or ``rediss+cluster://``) names any node of a
cluster; the client discovers the rest, follows MOVED/ASK redirections and
re-reads the slot map after a failover (redis-py's ``RedisCluster``). Its
retries are few and immediate, so an outage surfaces quickly as a connection
error and the router's own jittered backoff paces the retries: no hot loop.

A Lua script and a multi-key XREADGROUP must keep to one hash slot, so:

- sources are read with one blocking XREADGROUP per slot (``SlotReads``), kept
  in flight across turns so a busy slot never waits on an idle one;
- a batch is committed per entry kind (``clustercommit.commit_cluster``): entries whose every
  write shares the source's slot go through the same atomic Lua commit as on a
  single server; the others are written with pipelined XADDs and acknowledged
  only after every write of the entry succeeded, a refused entry's landed copies
  deleted again (at-least-once across a crash; the provenance fields
  ``synapse-source`` + ``synapse-id`` are the dedupe key).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

from synapse import wire
from synapse.boundedcache import BoundedCache
from synapse.config import Route, RoutingTable

SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
CONNECT_TIMEOUT_S = 5.0
#: Raw replies for the commands the router parses itself (flat field lists, like hiredis).
RAW_COMMANDS = (
    "XREADGROUP",
    "XREAD",
    "XAUTOCLAIM",
    "XCLAIM",
    "XPENDING",
    "XRANGE",
    "XREVRANGE",
)

Client = wire.Client


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme.lower() in SCHEMES


def node_url(url: str) -> str:
    """``redis+cluster://h:p`` -> ``redis://h:p`` (the seed node's plain URL)."""
    parts = urlsplit(url)
    scheme = SCHEMES.get(parts.scheme.lower(), parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", parts.query, parts.fragment))


_slots: BoundedCache[str | bytes, int] = BoundedCache()  # names come from producers too


def slot_of(key: str | bytes) -> int:
    """The hash slot of ``key`` (hash tags ``{...}`` honoured), cached (bounded in bytes)."""
    found = _slots.get(key)
    if found is not None:
        return found
    slot = int(key_slot(key.encode() if isinstance(key, str) else key))
    _slots.put(key, slot)
    return slot


class ClusterClient(RedisCluster):
    """RedisCluster that finds stream keys itself (no COMMAND GETKEYS round trip)."""

    async def _determine_slot(self, command: str, *args: Any) -> int:
        name = command.upper() if isinstance(command, str) else bytes(command).decode().upper()
        if name in ("XREADGROUP", "XREAD"):
            upper = [a.upper() if isinstance(a, str) else a for a in args]
            at = upper.index("STREAMS") + 1
            streams = args[at : at + (len(args) - at) // 2]
            slots = {slot_of(k) for k in streams}
            if len(slots) != 1:
                raise RedisClusterException(f"{name} - all keys must map to the same key slot")
            return slots.pop()
        slot: int = await super()._determine_slot(command, *args)
        return slot


def connect_any(url: str, *, read_timeout_s: float, password: str | None = None) -> Client:
    """A client for ``url``: a cluster client for ``redis+cluster://``, else a plain one.

    Both return raw replies for stream reads (flat field lists) and use RESP2.
    The CLI calls this too, so every command that takes a URL works on a cluster.
    """
    kwargs: dict[str, Any] = {
        "socket_timeout": read_timeout_s,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_keepalive": True,
        "decode_responses": False,
        "protocol": 2,
    }
    if password:
        kwargs["password"] = password
    if not is_cluster_url(url):
        return aioredis.Redis.from_url(url, **kwargs)
    client = ClusterClient.from_url(
        node_url(url),
        require_full_coverage=False,
        # Two quick retries ride out a MOVED storm or a slot map refresh; longer
        # outages reach the router's jittered backoff instead of spinning here.
        retry=Retry(NoBackoff(), 2),
        **kwargs,
    )
    for command in RAW_COMMANDS:
        client.response_callbacks.pop(command, None)
    return client


def group_by_slot(streams: Iterable[str]) -> list[tuple[str, ...]]:
    """Streams grouped by hash slot, in first-seen order (one XREADGROUP each)."""
    groups: dict[int, list[str]] = {}
    for stream in streams:
        groups.setdefault(slot_of(stream), []).append(stream)
    return [tuple(g) for g in groups.values()]


class SlotReads:
    """One blocking XREADGROUP per slot group of sources, kept in flight across turns."""

    def __init__(self) -> None:
        self.tasks: dict[tuple[str, ...], asyncio.Future[Any]] = {}

    async def next(
        self,
        client: Client,
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


# -- which routes stay atomic on a cluster (``synapse check --cluster``) ------------------


@dataclass(frozen=True, slots=True)
class Atomicity:
    """Whether the writes of a route (or the dead letters of a source) share their source's slot."""

    kind: str  # "route" or "dead_letter"
    name: str
    atomic: bool
    detail: str


def pattern_slot(pattern: str) -> int | None:
    """The slot of every key ``pattern`` can name, or None when a glob leaves it open."""
    if not any(c in pattern for c in "*?["):
        return slot_of(pattern)
    start = pattern.find("{")
    end = pattern.find("}", start + 1)
    if start < 0 or end <= start + 1 or any(c in pattern[: end + 1] for c in "*?[\\"):
        return None
    return slot_of(pattern[: end + 1])


def atomicity(table: RoutingTable) -> list[Atomicity]:
    """Per route and per source's dead letters: atomic (one slot) or at-least-once."""
    found: list[Atomicity] = []
    for route in table.routes:
        sources = [s for s in table.sources if route.source_glob is None or _may_match(route, s)]
        found.append(_judge("route", route.name, sources, route.to))
    for source in table.sources:
        found.append(_judge("dead_letter", source, [source], (table.settings.dead_letter,)))
    return found


def _may_match(route: Route, source: str) -> bool:
    """Whether a route's source glob can match a source name or pattern."""
    if route.matches_source is None or route.matches_source(source):
        return True
    if _literal_prefix(source) == source:
        return False
    # Two globs can share a name only if one's literal prefix starts the other's.
    mine, theirs = _literal_prefix(route.source_glob or ""), _literal_prefix(source)
    return mine.startswith(theirs) or theirs.startswith(mine)


def _literal_prefix(pattern: str) -> str:
    cut = min((i for i, c in enumerate(pattern) if c in "*?[\\"), default=len(pattern))
    return pattern[:cut]


def _judge(kind: str, name: str, sources: Sequence[str], dests: Sequence[str]) -> Atomicity:
    problems: list[str] = []
    for source in sources:
        home = pattern_slot(source)
        if home is None:
            problems.append(f"source {source!r} is a glob with no hash tag: slot unknown")
            continue
        apart = [d for d in dests if slot_of(d) != home]
        if apart:
            problems.append(
                f"{source!r} (slot {home}) -> "
                + ", ".join(f"{d!r} (slot {slot_of(d)})" for d in apart)
            )
    if problems:
        return Atomicity(kind, name, False, "at-least-once: " + "; ".join(problems))
    slots = sorted({pattern_slot(s) for s in sources} - {None})  # type: ignore[type-var]
    return Atomicity(kind, name, True, f"atomic: one slot ({', '.join(map(str, slots))})")
