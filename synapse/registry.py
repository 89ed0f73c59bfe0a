"""The service registry: who produces and consumes which streams, alive by heartbeat.

Each instance is one hash ``synapse:{registry}:service:<name>:<instance>`` that
expires after its TTL unless a heartbeat renews it, so a dead instance disappears by
itself. A sorted set ``synapse:{registry}:services`` indexes the hashes by expiry
time, so listing never scans the keyspace; stale index members are pruned as they
are read. The ``{registry}`` hash tag puts every registry key in one slot: the
register/deregister transactions work unchanged on Redis Cluster (a client from
``synapse.wire.connect_any``).

    info = ServiceInfo(name="trainer", instance="host-1", version="2.3",
                       produces=("training-events",), consumes=("model-events",))
    async with registered(client, info, ttl_s=15):
        ...  # the service runs; a heartbeat renews the entry every ttl/3
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from synapse import keys
from synapse import log as logging
from synapse.failures import REDIS_FAILURES
from synapse.wire import Client

DEFAULT_TTL_S = 15.0
#: What a heartbeat survives: Redis errors, sockets, and a cluster with no node reachable.
FAILURES = REDIS_FAILURES


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceInfo:
    """What one running instance says about itself."""

    name: str
    instance: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    kind: str = "service"  # service | router
    version: str = ""
    produces: tuple[str, ...] = ()
    consumes: tuple[str, ...] = ()
    group: str = ""  # a consuming service's consumer group (its name)
    publishes: tuple[str, ...] = ()  # event types a service has published
    config: str = ""  # a router's config hash
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    @property
    def key(self) -> str:
        return f"{keys.REGISTRY_PREFIX}{self.name}:{self.instance}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Registration:
    """One live registry entry as read back."""

    info: ServiceInfo
    heartbeat_ms: int
    ttl_ms: int  # time left before it expires

    def as_json(self) -> dict[str, Any]:
        i = self.info
        return {
            "name": i.name,
            "instance": i.instance,
            "kind": i.kind,
            "version": i.version,
            "produces": list(i.produces),
            "consumes": list(i.consumes),
            "group": i.group or None,
            "publishes": list(i.publishes),
            "config": i.config or None,
            "host": i.host,
            "pid": i.pid,
            "started_ms": i.started_ms,
            "heartbeat_ms": self.heartbeat_ms,
            "ttl_ms": self.ttl_ms,
        }


def _now_ms() -> int:
    return int(time.time() * 1000)


async def register(client: Client, info: ServiceInfo, ttl_s: float = DEFAULT_TTL_S) -> None:
    """Write (or renew) ``info`` with a TTL; one atomic transaction."""
    now = _now_ms()
    ttl_ms = max(1, int(ttl_s * 1000))
    mapping: dict[Any, Any] = {
        "name": info.name,
        "instance": info.instance,
        "kind": info.kind,
        "version": info.version,
        "produces": json.dumps(list(info.produces)),
        "consumes": json.dumps(list(info.consumes)),
        "group": info.group,
        "publishes": json.dumps(list(info.publishes)),
        "config": info.config,
        "host": info.host,
        "pid": str(info.pid),
        "started_ms": str(info.started_ms),
        "heartbeat_ms": str(now),
    }
    async with client.pipeline(transaction=True) as pipe:
        pipe.hset(info.key, mapping=mapping)
        pipe.pexpire(info.key, ttl_ms)
        pipe.zadd(keys.REGISTRY_INDEX, {info.key: now + ttl_ms})
        await pipe.execute()


async def deregister(client: Client, info: ServiceInfo) -> None:
    async with client.pipeline(transaction=True) as pipe:
        pipe.delete(info.key)
        pipe.zrem(keys.REGISTRY_INDEX, info.key)
        await pipe.execute()


async def list_services(client: Client) -> list[Registration]:
    """Every live registration, by name then instance; expired index members pruned."""
    now = _now_ms()
    await client.zremrangebyscore(keys.REGISTRY_INDEX, "-inf", now)
    members: list[Any] = list(await client.zrange(keys.REGISTRY_INDEX, 0, -1))
    if not members:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for member in members:
            pipe.hgetall(member)
            pipe.pttl(member)
        replies = await pipe.execute()
    found = []
    for raw, ttl in zip(replies[::2], replies[1::2], strict=True):
        if not raw or ttl is None or int(ttl) < 0:
            continue
        found.append(_decode(raw, int(ttl)))
    return sorted(found, key=lambda r: (r.info.name, r.info.instance))


def _decode(raw: dict[bytes, bytes], ttl_ms: int) -> Registration:
    def get(name: str) -> str:
        return raw.get(name.encode(), b"").decode("utf-8", "replace")

    def listed(name: str) -> tuple[str, ...]:
        try:
            value = json.loads(get(name) or "[]")
        except ValueError:
            return ()
        return tuple(str(v) for v in value) if isinstance(value, list) else ()

    info = ServiceInfo(
        name=get("name"),
        instance=get("instance"),
        kind=get("kind") or "service",
        version=get("version"),
        produces=listed("produces"),
        consumes=listed("consumes"),
        group=get("group"),
        publishes=listed("publishes"),
        config=get("config"),
        host=get("host"),
        pid=int(get("pid") or 0),
        started_ms=int(get("started_ms") or 0),
    )
    return Registration(info=info, heartbeat_ms=int(get("heartbeat_ms") or 0), ttl_ms=ttl_ms)


class HeartbeatLoop:
    """Keeps one registration alive until stopped: ``write`` every ``ttl / 3``, the first
    failure of a run logged (``registry_heartbeat_failed``), every one counted, none
    raised unless ``tolerated`` says no; stopping ends with ``leave``. A store's
    heartbeat says how to write, leave and which errors to ride out."""

    def __init__(self, info: Callable[[], ServiceInfo], ttl_s: float = DEFAULT_TTL_S) -> None:
        self.info = info
        self.ttl_s = ttl_s
        self.interval_s = ttl_s / 3
        self.stopping = asyncio.Event()
        self.beats = 0
        self.failures = 0
        self.log = logging.get("synapse.registry")
        self._last: ServiceInfo | None = None

    async def write(self, last: ServiceInfo | None, info: ServiceInfo) -> None:
        """Register ``info`` for ``ttl_s`` (``last``, the one written before, removed first
        when its key differs)."""
        raise NotImplementedError

    async def leave(self, info: ServiceInfo) -> None:
        """Remove ``info`` at stop; a failure is swallowed (its TTL removes it)."""
        raise NotImplementedError

    def tolerated(self, exc: Exception) -> bool:
        """Whether a failed write is logged and retried (else it ends the loop)."""
        raise NotImplementedError

    def stop(self) -> None:
        self.stopping.set()

    async def run(self) -> None:
        failing = False
        while not self.stopping.is_set():
            try:
                info = self.info()
                await self.write(self._last, info)
                self._last = info
                self.beats += 1
                failing = False
            except Exception as exc:  # a heartbeat never stops the service
                if not self.tolerated(exc):
                    raise
                self.failures += 1
                if not failing:
                    self.log.warning("registry_heartbeat_failed", error=str(exc))
                failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.interval_s)
        if self._last is not None:
            await self.leave(self._last)


class Heartbeat(HeartbeatLoop):
    """Keeps one registration alive until stopped; Redis errors are logged, never raised."""

    def __init__(
        self,
        client: Client,
        info: Callable[[], ServiceInfo],
        ttl_s: float = DEFAULT_TTL_S,
    ) -> None:
        super().__init__(info, ttl_s)
        self.client = client

    async def write(self, last: ServiceInfo | None, info: ServiceInfo) -> None:
        if last is not None and last.key != info.key:
            await deregister(self.client, last)
        await register(self.client, info, self.ttl_s)

    async def leave(self, info: ServiceInfo) -> None:
        with contextlib.suppress(*FAILURES):
            await deregister(self.client, info)

    def tolerated(self, exc: Exception) -> bool:
        return isinstance(exc, FAILURES)


@contextlib.asynccontextmanager
async def registered(
    client: Client, info: ServiceInfo, ttl_s: float = DEFAULT_TTL_S
) -> AsyncIterator[Heartbeat]:
    """Register ``info`` now and keep it alive for the block; deregister on exit."""
    await register(client, info, ttl_s)
    beat = Heartbeat(client, lambda: info, ttl_s)
    task = asyncio.create_task(beat.run())
    try:
        yield beat
    finally:
        beat.stop()
        await task
