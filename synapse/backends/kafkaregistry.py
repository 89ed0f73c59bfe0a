"""The service registry on Kafka: one compacted topic, ``synapse.registry``.

Each running instance is one record keyed ``<service>:<instance>`` whose value is
its ``registry.ServiceInfo`` as JSON plus ``ttl_ms``; a heartbeat produces it again
(``acks=all``) every ``ttl / 3``. An instance is alive while the record's timestamp
(the producer's CreateTime) plus its ``ttl_ms`` lies in the future: a killed
process drops out when its TTL runs out, as on Redis. A clean stop produces a
tombstone (no value) for its key: gone at once, and compaction forgets it.

Listing reads the topic from the beginning up to a sentinel produced just before
(a tombstone keyed ``sentinel/<uuid>``), never by end offsets (tansu's under-report:
docs/kafka.md); the last record per key wins. Blocking calls: run them in a worker
thread from asyncio (``KafkaHeartbeat`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer

from synapse.backends import kafkaadmin as admin
from synapse.backends import kafkatable
from synapse.backends.kafkaconfig import client_config
from synapse.backends.kafkafailures import classify_kafka
from synapse.backends.kafkaproduce import produce_one
from synapse.errors import Failure
from synapse.kafka.names import REGISTRY_TOPIC
from synapse.registry import DEFAULT_TTL_S, HeartbeatLoop, Registration, ServiceInfo

#: How long a registration write or a listing may take before it counts as a failure.
TIMEOUT_S = 15.0


def record_key(info: ServiceInfo) -> bytes:
    return f"{info.name}:{info.instance}".encode()


def encode(info: ServiceInfo, ttl_ms: int) -> bytes:
    """The record value: the instance's description and its TTL."""
    return json.dumps(
        {
            "name": info.name,
            "instance": info.instance,
            "kind": info.kind,
            "version": info.version,
            "produces": list(info.produces),
            "consumes": list(info.consumes),
            "group": info.group,
            "publishes": list(info.publishes),
            "config": info.config,
            "host": info.host,
            "pid": info.pid,
            "started_ms": info.started_ms,
            "ttl_ms": ttl_ms,
        }
    ).encode()


def decode(value: bytes, timestamp_ms: int, now_ms: int) -> Registration | None:
    """The registration a record stands for, or None when its TTL ran out (or it is bad)."""
    try:
        raw: Any = json.loads(value)
        ttl_ms = int(raw["ttl_ms"])
        info = ServiceInfo(
            name=str(raw["name"]),
            instance=str(raw["instance"]),
            kind=str(raw.get("kind") or "service"),
            version=str(raw.get("version") or ""),
            produces=tuple(str(s) for s in raw.get("produces") or ()),
            consumes=tuple(str(s) for s in raw.get("consumes") or ()),
            group=str(raw.get("group") or ""),
            publishes=tuple(str(s) for s in raw.get("publishes") or ()),
            config=str(raw.get("config") or ""),
            host=str(raw.get("host") or ""),
            pid=int(raw.get("pid") or 0),
            started_ms=int(raw.get("started_ms") or 0),
        )
    except (ValueError, TypeError, KeyError):
        return None
    left = timestamp_ms + ttl_ms - now_ms
    if left <= 0:
        return None
    return Registration(info=info, heartbeat_ms=timestamp_ms, ttl_ms=left)


def ensure_topic(bootstrap: str) -> None:
    """Create ``synapse.registry`` (one partition, compacted) unless it exists."""
    kafkatable.ensure_compacted(bootstrap, REGISTRY_TOPIC)


def _produce(producer: Producer, key: bytes, value: bytes | None) -> None:
    produce_one(producer, REGISTRY_TOPIC, key, value, TIMEOUT_S)


def register(producer: Producer, info: ServiceInfo, ttl_s: float = DEFAULT_TTL_S) -> None:
    """Write (or renew) ``info``, alive for ``ttl_s`` from now (blocking)."""
    _produce(producer, record_key(info), encode(info, max(1, int(ttl_s * 1000))))


def deregister(producer: Producer, info: ServiceInfo) -> None:
    """A tombstone for ``info``'s key: gone from every listing at once (blocking)."""
    _produce(producer, record_key(info), None)


def list_services(bootstrap: str, producer: Producer | None = None) -> list[Registration]:
    """Every live registration, by name then instance (blocking); none when the topic is
    missing."""
    if REGISTRY_TOPIC not in admin.topics(bootstrap):
        return []
    writer = producer or Producer(client_config(bootstrap, {"acks": "all"}))
    sentinel = kafkatable.new_sentinel()
    _produce(writer, sentinel, None)
    reader = Consumer(client_config(bootstrap, {"group.id": "synapse-registry-reader"}))
    last: dict[bytes, tuple[bytes | None, int]] = {}
    for msg in kafkatable.read_through(
        reader, REGISTRY_TOPIC, sentinel, TIMEOUT_S, "service registry not read back"
    ):
        key, value = msg.key(), msg.value()
        if isinstance(key, bytes):
            last[key] = (value if isinstance(value, bytes) else None, msg.timestamp()[1])
    now = int(time.time() * 1000)
    found = [
        reg
        for value, stamp in last.values()
        if value is not None and (reg := decode(value, stamp, now)) is not None
    ]
    return sorted(found, key=lambda r: (r.info.name, r.info.instance))


class KafkaHeartbeat(HeartbeatLoop):
    """Keeps one registration alive until stopped (``registry.Heartbeat`` on Kafka);
    broker errors are logged, never raised. Stopping writes the tombstone."""

    def __init__(
        self,
        bootstrap: str,
        producer: Producer,
        info: Callable[[], ServiceInfo],
        ttl_s: float = DEFAULT_TTL_S,
    ) -> None:
        super().__init__(info, ttl_s)
        self.bootstrap = bootstrap
        self.producer = producer
        self._topic = False

    async def write(self, last: ServiceInfo | None, info: ServiceInfo) -> None:
        await asyncio.to_thread(self._beat, last, info)

    async def leave(self, info: ServiceInfo) -> None:
        with contextlib.suppress(KafkaException):
            await asyncio.to_thread(deregister, self.producer, info)

    def tolerated(self, exc: Exception) -> bool:
        return classify_kafka(exc) != Failure.INTERNAL

    def _beat(self, last: ServiceInfo | None, info: ServiceInfo) -> None:
        if not self._topic:
            ensure_topic(self.bootstrap)
            self._topic = True
        if last is not None and record_key(last) != record_key(info):
            deregister(self.producer, last)
        register(self.producer, info, self.ttl_s)
