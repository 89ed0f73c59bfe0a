"""synapse-router: lifecycle. Start, signals, reload swap, drain, stop.

Signal handlers only flip state; the main coroutine acts. SIGTERM/SIGINT stop
reading, finish and commit the batch in hand, and exit 0 (a second one exits at
once). SIGHUP asks for a reload: the whole new table is read, checked and
compiled on the side (in a thread), then swapped in between batches; a bad one
changes nothing. A storm of SIGHUPs coalesces into as few reloads as needed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from synapse import __version__, launch, settings
from synapse import log as logging
from synapse.config import RoutingTable, diff, load_table
from synapse.consumer import Router
from synapse.errors import ConfigError
from synapse.kafka.url import backend_kind
from synapse.metrics import Metrics
from synapse.notify import Notifier
from synapse.port import MetricsServer
from synapse.registry import ServiceInfo


class Daemon:
    def __init__(
        self,
        config: Path,
        url: str,
        metrics_addr: str,
        *,
        consumer: str | None,
        password: str | None,
        table: RoutingTable,
    ) -> None:
        self.config = config
        self.url = url
        self.metrics_addr = metrics_addr
        self.table = table
        self.metrics = Metrics()
        self.notifier = Notifier()
        self.log = logging.get("synapse.daemon")
        self.router = Router(
            table,
            url,
            self.metrics,
            consumer=consumer,
            password=password,
            on_progress=self.notifier.progress,
        )
        self.reload_requested = asyncio.Event()
        self.stop_requested = asyncio.Event()
        self._signals = 0

    def _on_stop(self, signum: int) -> None:
        self._signals += 1
        if self._signals > 1:
            self.log.warning("forced_exit", signal=signal.Signals(signum).name)
            os._exit(130)
        self.log.info("stop_requested", signal=signal.Signals(signum).name)
        self.notifier.stopping()
        self.stop_requested.set()
        self.router.stop()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)
        if launch.hup_pending():  # a SIGHUP during start-up: reload once running
            self.reload_requested.set()

        host, port = settings.host_port(self.metrics_addr)
        server = MetricsServer(self.metrics, lambda: self.router.ready)
        try:
            await server.start(host, port)
        except OSError as exc:
            self.log.error("metrics_port_unavailable", addr=self.metrics_addr, error=str(exc))
            return 1
        self.metrics.set_config(self.table.hash, time.time())
        self.metrics.reloads.labels("success")
        self.log.info(
            "router_starting",
            version=__version__,
            config=str(self.config),
            config_hash=self.table.hash,
            url=settings.redact(self.url),
            backend=self.router.backend.name,
            metrics=f"http://{settings.url_host(host)}:{server.port}/metrics",
            consumer=self.router.consumer,
        )
        self._retention_unapplied(self.table)
        self.notifier.status(f"connecting to {self.router.backend.name}")
        try:
            async with asyncio.TaskGroup() as tasks:
                routing = tasks.create_task(self.router.run())
                tasks.create_task(self._announce_ready(routing))
                tasks.create_task(self._reloader(routing))
                tasks.create_task(self._heartbeat(routing))
        finally:
            self.notifier.stopping()
            await self.router.close()
            await server.close()
        self.log.info("router_stopped", batches=self.router.batches)
        if self.router.failure is not None:
            return self.router.failure.exit_code  # e.g. consumer name in use by a live router
        return 0

    async def _announce_ready(self, routing: asyncio.Task[None]) -> None:
        while not routing.done():
            if self.router.ready:
                self.notifier.ready(f"routing {len(self.router.sources)} sources")
                return
            await asyncio.sleep(0.05)

    async def _reloader(self, routing: asyncio.Task[None]) -> None:
        while not routing.done():
            waiter = asyncio.ensure_future(self.reload_requested.wait())
            await asyncio.wait({waiter, routing}, return_when=asyncio.FIRST_COMPLETED)
            if routing.done():
                waiter.cancel()
                return
            self.reload_requested.clear()  # signals arriving during the load coalesce
            await self.reload()

    def service_info(self) -> ServiceInfo:
        """What this router tells the service registry (the config hash follows reloads)."""
        table = self.table
        return ServiceInfo(
            name="synapse-router",
            instance=self.router.consumer,
            kind="router",
            version=__version__,
            consumes=table.sources,
            produces=(*sorted(table.destinations), table.settings.dead_letter),
            config=table.hash,
        )

    async def _heartbeat(self, routing: asyncio.Task[None]) -> None:
        """Register in the service registry while routing runs (TTL heartbeat)."""
        beat = self.router.backend.presence(self.service_info)
        beating = asyncio.ensure_future(beat.run())
        await asyncio.wait({routing, beating}, return_when=asyncio.FIRST_COMPLETED)
        beat.stop()
        await beating

    async def reload(self) -> None:
        self.notifier.reloading()
        try:
            table = await asyncio.to_thread(load_table, self.config, kind=backend_kind(self.url))
        except Exception as exc:  # ConfigError, an unreadable file, a bug: never kill the router
            self.metrics.reloads.labels("failure").inc()
            self.metrics.last_reload_ok.set(0)
            errors = [str(p) for p in exc.problems] if isinstance(exc, ConfigError) else [repr(exc)]
            self.log.error(
                "config_reload_failed",
                config=str(self.config),
                config_hash=self.table.hash,
                errors=errors,
            )
            self.notifier.reloaded(f"reload failed, old table kept: {'; '.join(errors)}")
            return
        changes = diff(self.table, table)
        self.table = table
        self.router.swap_table(table)
        self.metrics.reloads.labels("success").inc()
        self.metrics.last_reload_ok.set(1)
        self.metrics.set_config(table.hash, time.time())
        self.log.info("config_reloaded", config_hash=table.hash, **changes)
        self._retention_unapplied(table)
        self.notifier.reloaded(f"reloaded config {table.hash}; routing")

    def _retention_unapplied(self, table: RoutingTable) -> None:
        """On Kafka the table's retention rules do nothing (the backend trims no topic and a
        topic has no length cap; the topics' own retention applies): say so at start and at
        each reload, as ``synapse check --url kafka://...`` does."""
        if self.router.backend.name != "kafka":
            return
        ages = [glob for glob, _, _ in table.max_ages]
        caps = [glob for glob, _, _ in table.retention]
        if ages or caps:
            self.log.warning(
                "retention_not_applied",
                max_age=ages,
                maxlen=caps,
                backend=self.router.backend.name,
                instead="the topics' retention.ms / retention.bytes",
            )
