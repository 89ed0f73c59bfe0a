"""The stores the router can route on, behind ``synapse.backend.Backend``: pick one by URL."""

from __future__ import annotations

import asyncio
from typing import TypedDict, Unpack

from synapse import log as logging
from synapse.backend import Backend
from synapse.backends.cluster import ClusterBackend
from synapse.backends.redis import RedisBackend
from synapse.kafka.url import backend_kind
from synapse.metrics import Metrics
from synapse.wire import is_cluster_url


class StoreOptions(TypedDict, total=False):
    """A store's own knobs, passed through from ``Router`` (tests shorten them)."""

    lease_ttl_ms: int  # Redis: the lease on the consumer name
    forget_idle_ms: int  # Redis: idle consumers with nothing pending are deleted after


def open_backend(
    url: str,
    *,
    consumer: str,
    password: str | None,
    block_ms: int,
    metrics: Metrics,
    stopping: asyncio.Event,
    log: logging.Logger,
    **options: Unpack[StoreOptions],
) -> Backend:
    """The backend for ``url``: Kafka for ``kafka://`` (confluent-kafka, the ``kafka``
    extra, imported only then), Redis Cluster for ``redis+cluster://``, else single Redis."""
    if backend_kind(url) == "kafka":
        from synapse.backends.kafka import KafkaBackend

        return KafkaBackend(url, consumer=consumer, metrics=metrics, stopping=stopping, log=log)
    return open_redis(
        url,
        consumer=consumer,
        password=password,
        block_ms=block_ms,
        metrics=metrics,
        stopping=stopping,
        log=log,
        **options,
    )


def open_redis(
    url: str,
    *,
    consumer: str,
    password: str | None,
    block_ms: int,
    metrics: Metrics,
    stopping: asyncio.Event,
    log: logging.Logger,
    **options: Unpack[StoreOptions],
) -> RedisBackend:
    """A Redis backend (single or cluster by URL), for callers that also use its Redis-only
    parts (the client's subscriber: its pending list, its writer connection)."""
    kind = ClusterBackend if is_cluster_url(url) else RedisBackend
    return kind(
        url,
        consumer=consumer,
        password=password,
        block_ms=block_ms,
        metrics=metrics,
        stopping=stopping,
        log=log,
        **options,
    )
