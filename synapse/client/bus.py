"""``Bus``: one service's connection to the bus: publish, subscribe, run, registration.

    bus = Bus(service="cyrex")
    await bus.publish("model.ready", {"model_id": "m1"})

    @bus.subscribe("model-events", types="model.ready")
    async def load(event: Event) -> None: ...

    await bus.run()          # until SIGTERM/SIGINT; bus.run_forever() from sync code

The URL is ``url=``, else ``SYNAPSE_URL`` / ``SYNAPSE_REDIS_URL``, else the embedded
server's ``./.synapse/redis.url`` that ``bin/run`` writes (``SYNAPSE_STATE_DIR``
moves it); a ``kafka://host:port[,host:port]`` URL puts the same API on Kafka
topics (docs/kafka.md "Services on Kafka"). Every Bus registers itself (service,
instance, host, pid, version, what it publishes and consumes) with a heartbeat TTL,
from its first publish or ``run``. What differs by store is behind ``seam.Store``
(``seam.resolve_url`` finds the URL); how the subscriptions run is ``serving.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import structlog

from synapse import __version__, registry, settings, wire
from synapse import log as logging
from synapse.backend import Presence
from synapse.client import serving
from synapse.client import subscription as subs
from synapse.client.publisher import Item, Publisher
from synapse.client.seam import (
    Store,
    check_names,
    default_dead_letter,
    open_store,
    record_key,
    resolve_url,
)
from synapse.client.subscriber import Subscriber
from synapse.client.validate import Checker
from synapse.config import RouterSettings
from synapse.consumer import default_consumer_name
from synapse.kafka.url import backend_kind


class Bus:
    """Publish and subscribe as ``service``; see the module docstring."""

    def __init__(
        self,
        service: str,
        *,
        url: str | None = None,
        config: str | Path | None = None,
        strict: bool = True,
        stream: str | None = None,
        dead_letter: str | None = None,
        password: str | None = None,
        register: bool = True,
        heartbeat_ttl_s: float = registry.DEFAULT_TTL_S,
        version: str = "",
        batch: int = 200,
        block_ms: int = 2000,
        drain_timeout_s: float = 30.0,
    ) -> None:
        if not service or not isinstance(service, str):
            raise ValueError("Bus needs a service name")
        self.service = service
        self.url = resolve_url(url)
        self.kind = backend_kind(self.url)
        self.password = password or settings.password()
        checker = (
            Checker.load(config, strict=strict, kind=self.kind) if config is not None else None
        )
        table_settings = checker.table.settings if checker is not None else RouterSettings()
        self.dead_letter = dead_letter or (
            table_settings.dead_letter if checker is not None else default_dead_letter(self.kind)
        )
        check_names(self.kind, service=service, dead_letter=self.dead_letter)
        self.publisher = Publisher(
            service,
            checker=checker,
            stream=stream or (checker.default_stream if checker else "ingress"),
            type_field=table_settings.type_field,
            data_field=table_settings.data_field,
        )
        self.register = register
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.version = version
        self.batch = batch
        self.block_ms = block_ms
        self.drain_timeout_s = drain_timeout_s
        self.consumer = default_consumer_name()
        self.subscriptions: list[subs.Subscription] = []
        self.subscriber: Subscriber | None = None
        self.log = logging.get("synapse.client").bind(service=service)
        self._store: Store | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heartbeat: Presence | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._stopping = False

    # -- connection and registration --------------------------------------------------------

    @property
    def store(self) -> Store:
        """The store of the running event loop (made on first use): Redis or Kafka by URL."""
        loop = asyncio.get_running_loop()
        if self._store is None or self._loop is not loop:
            self._store = open_store(self.url, password=self.password)
            self._loop, self._heartbeat, self._heartbeat_task = loop, None, None
        return self._store

    @property
    def client(self) -> wire.Client:
        """The Redis writer connection of the running event loop (Redis URLs only)."""
        client = getattr(self.store, "client", None)
        if client is None:
            raise TypeError(f"Bus.client is a Redis connection; this Bus is on {self.kind}")
        return cast("wire.Client", client)

    def info(self) -> registry.ServiceInfo:
        """What this instance registers: streams and types published, streams consumed."""
        consumes: dict[str, None] = {}
        for sub in self.subscriptions:
            consumes.update(dict.fromkeys(sub.streams))
        return registry.ServiceInfo(
            name=self.service,
            instance=self.consumer,
            kind="service",
            version=self.version or __version__,
            produces=tuple(self.publisher.streams),
            consumes=tuple(consumes),
            group=self.service if self.subscriptions else "",
            publishes=tuple(self.publisher.types),
        )

    def _ensure_registered(self) -> Store:
        store = self.store
        if self.register and self._heartbeat_task is None:
            self._heartbeat = store.presence(self.info, self.heartbeat_ttl_s)
            self._heartbeat_task = asyncio.create_task(self._heartbeat.run())
        return store

    async def close(self) -> None:
        """Deregister and close the connection (a running subscriber is stopped first)."""
        self.stop()
        if self._heartbeat is not None and self._heartbeat_task is not None:
            self._heartbeat.stop()
            with contextlib.suppress(Exception):
                await self._heartbeat_task
        self._heartbeat = self._heartbeat_task = None
        if self._store is not None:
            await self._store.close()
            self._store = None

    async def __aenter__(self) -> Bus:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- publishing -------------------------------------------------------------------------

    async def publish(
        self,
        event: Any,
        data: dict[str, Any] | None = None,
        *,
        stream: str | None = None,
        id: str | None = None,
        extra: dict[str, str] | None = None,
        key: str | bytes | None = None,
    ) -> str:
        """Publish one event (a type and a dict, or a ModelKit model); return its ``id``.

        ``key``: on Kafka, the record key (one key stays on one partition, in order; none
        by default: records spread over the partitions); on Redis a stream is one ordered
        log and the key changes nothing.
        """
        store = self._ensure_registered()
        return await store.publish(
            self.publisher,
            event,
            data,
            stream=stream,
            event_id=id,
            extra=extra,
            key=record_key(key),
        )

    async def publish_many(
        self,
        items: Iterable[Item],
        *,
        stream: str | None = None,
        key: str | bytes | None = None,
    ) -> list[str]:
        """Publish many events in one round trip; their ids in order (``key`` as ``publish``)."""
        store = self._ensure_registered()
        return await store.publish_many(self.publisher, items, stream=stream, key=record_key(key))

    # -- subscribing ------------------------------------------------------------------------

    def subscribe(
        self,
        streams: str | Sequence[str],
        *,
        types: str | Sequence[str] | None = None,
        concurrency: int = subs.DEFAULT_CONCURRENCY,
        max_deliveries: int = subs.DEFAULT_MAX_DELIVERIES,
        retry_backoff_s: float = subs.DEFAULT_RETRY_BACKOFF_S,
        dedupe_s: float | None = None,
        claim_idle_ms: int = subs.DEFAULT_CLAIM_IDLE_MS,
        start: str = "latest",
        model: Any = None,
    ) -> Callable[[subs.Handler], subs.Handler]:
        """Decorator: run the handler for each event of ``types`` on ``streams``."""

        def add(handler: subs.Handler) -> subs.Handler:
            if self.subscriber is not None:
                raise RuntimeError("subscribe before run(): the subscriber is already running")
            check_names(self.kind, streams=[streams] if isinstance(streams, str) else streams)
            self.subscriptions.append(
                subs.make(
                    streams,
                    handler,
                    types=types,
                    concurrency=concurrency,
                    max_deliveries=max_deliveries,
                    retry_backoff_s=retry_backoff_s,
                    dedupe_s=dedupe_s,
                    claim_idle_ms=claim_idle_ms,
                    start=start,
                    model=model,
                )
            )
            return handler

        return add

    # -- running ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop reading; handlers in flight finish (``run`` then returns)."""
        self._stopping = True
        if self.subscriber is not None:
            self.subscriber.stop()

    async def run(self) -> None:
        """Serve the subscriptions until SIGTERM/SIGINT (or ``stop``); then drain and return.

        A second signal exits at once.
        """
        if not self.subscriptions:
            raise RuntimeError("nothing to run: subscribe a handler first")
        self.subscriber = serving.make_subscriber(
            self.service,
            self.subscriptions,
            self.store,
            consumer=self.consumer,
            batch=self.batch,
            block_ms=self.block_ms,
            dead_letter=self.dead_letter,
            drain_timeout_s=self.drain_timeout_s,
            log=self.log,
        )
        if self._stopping:
            self.subscriber.stop()
        self._ensure_registered()
        try:
            with serving.stop_signals(self._on_signal):
                await self.subscriber.run()
        finally:
            self.subscriber = None
            await self.close()

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stopping:
            self.log.warning("second_signal_exiting", signal=sig.name)
            os._exit(128 + sig.value)
        self.log.info("stopping", signal=sig.name)
        self.stop()

    def run_forever(self) -> None:
        """``run`` for sync programs (configures logging if nothing has)."""
        if not structlog.is_configured():
            logging.configure()
        asyncio.run(self.run())
