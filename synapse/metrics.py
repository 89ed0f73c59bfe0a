"""Every metric on one registry, and the one HTTP port that serves them.

Metrics are created once per process (``Metrics``) and never re-created on
reload. Labels are bounded: source, route, destination, reason, kind. The hot
path counts per batch, not per event.

The port serves ``GET /metrics``, ``/healthz`` and ``/readyz`` and nothing else
(404; other methods 405). It is an asyncio server with a read deadline per
request, a cap on request size, a cap on concurrent connections, and a cached
exposition (rendered at most once per ``cache_s`` in a worker thread), so a
burst of scrapes or garbage connections cannot slow routing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.exposition import generate_latest

from synapse import __version__

disable_created_metrics()  # type: ignore[no-untyped-call]  # the _created series double the exposition for no use here

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    """The router's metrics, on a registry of their own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.consumed = Counter(
            "synapse_events_consumed", "Entries read from sources", ["source"], registry=r
        )
        self.routed = Counter(
            "synapse_events_routed",
            "Copies written to destinations",
            ["route", "destination"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "synapse_events_dead_lettered",
            "Entries moved to the dead-letter stream",
            ["reason"],
            registry=r,
        )
        self.dropped = Counter(
            "synapse_events_dropped",
            "Entries acknowledged without a write (policy, deleted)",
            ["reason"],
            registry=r,
        )
        self.retried = Counter(
            "synapse_events_retried",
            "Entries left pending after a failed destination write",
            ["source"],
            registry=r,
        )
        self.latency = Histogram(
            "synapse_event_latency_seconds",
            "Entry id time to commit",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch = Histogram(
            "synapse_batch_duration_seconds",
            "Plan and commit time of one batch",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.pending = Gauge(
            "synapse_source_pending", "Entries pending in the group", ["source"], registry=r
        )
        self.lag = Gauge(
            "synapse_source_lag", "Entries not yet delivered to the group", ["source"], registry=r
        )
        self.reclaimed = Counter(
            "synapse_reclaimed", "Entries claimed from idle consumers", registry=r
        )
        self.redis_up = Gauge("synapse_redis_up", "1 when Redis answers", registry=r)
        self.redis_errors = Counter(
            "synapse_redis_errors", "Redis errors by kind", ["kind"], registry=r
        )
        self.group_recreated = Counter(
            "synapse_group_recreated",
            "Consumer groups (re)created after NOGROUP",
            ["source"],
            registry=r,
        )
        self.reloads = Counter(
            "synapse_config_reloads", "Config reloads by result", ["result"], registry=r
        )
        self.last_reload = Gauge(
            "synapse_config_last_reload_success_timestamp_seconds",
            "Time of the last successful config load",
            registry=r,
        )
        self.last_reload_ok = Gauge(
            "synapse_config_last_reload_successful",
            "1 when the last config load succeeded (0: a reload failed, old table kept)",
            registry=r,
        )
        self.last_reload_ok.set(1)  # the daemon never starts on a bad table
        self.config_info = Gauge(
            "synapse_config_info", "Hash of the loaded config", ["hash"], registry=r
        )
        self.sources = Gauge("synapse_sources", "Source streams being consumed", registry=r)
        self.sources_skipped = Counter(
            "synapse_sources_skipped",
            "Streams a source glob matched but the router left out, once per name "
            "(invalid_name: not UTF-8; write_target: the router writes it)",
            ["reason"],
            registry=r,
        )
        self.ready = Gauge("synapse_ready", "1 when the router is ready", registry=r)
        Info("synapse_build", "Build information", registry=r).info({"version": __version__})
        self.redis_up.set(0)
        for reason in ("no_route", "deleted"):
            self.dropped.labels(reason)
        for result in ("success", "failure"):
            self.reloads.labels(result)
        self._config_hash: str | None = None

    def set_config(self, config_hash: str, loaded_at: float) -> None:
        if self._config_hash is not None:
            self.config_info.remove(self._config_hash)
        self._config_hash = config_hash
        self.config_info.labels(config_hash).set(1)
        self.last_reload.set(loaded_at)


def observe_many(histogram: Histogram, amount: float, count: int) -> None:
    """``count`` observations of ``amount`` at once: the buckets and count of ``count``
    ``observe(amount)`` calls, the sum up to float rounding, in one step instead of ``count``.

    prometheus_client has no public bulk observe; this uses the Histogram's
    ``_sum``, ``_upper_bounds`` and ``_buckets`` (pinned range in pyproject.toml;
    tests/test_metrics_bulk.py checks it against ``observe``).
    """
    if count <= 0:
        return
    histogram._raise_if_not_observable()  # type: ignore[no-untyped-call]
    histogram._sum.inc(amount * count)
    for i, bound in enumerate(histogram._upper_bounds):
        if amount <= bound:
            histogram._buckets[i].inc(count)
            break


MAX_REQUEST_BYTES = 8192
READ_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 32


class MetricsServer:
    """The one port: /metrics, /healthz, /readyz."""

    def __init__(
        self,
        metrics: Metrics,
        is_ready: Callable[[], bool],
        cache_s: float = 1.0,
        read_timeout_s: float = READ_TIMEOUT_S,
    ):
        self.metrics = metrics
        self.is_ready = is_ready
        self.cache_s = cache_s
        self.read_timeout_s = read_timeout_s
        self._server: asyncio.Server | None = None
        self._cached: tuple[float, bytes] = (0.0, b"")
        self._render_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        # Connections still reading their request head, oldest first: when every slot is
        # held, a new connection evicts the oldest of these, so idle or slow clients can
        # never lock a scrape out (a real request reads its head in microseconds).
        self._reading: dict[asyncio.StreamWriter, None] = {}
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, host, port, limit=MAX_REQUEST_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _exposition(self) -> bytes:
        async with self._render_lock:
            stamp, body = self._cached
            now = time.monotonic()
            if now - stamp >= self.cache_s or not body:
                body = await asyncio.to_thread(generate_latest, self.metrics.registry)
                self._cached = (time.monotonic(), body)
            return body

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._slots.locked() and self._reading:
            oldest = next(iter(self._reading))
            del self._reading[oldest]
            oldest.transport.abort()
        try:
            await asyncio.wait_for(self._slots.acquire(), self.read_timeout_s)
        except TimeoutError:  # every slot busy answering: refuse rather than queue
            writer.transport.abort()
            return
        self._reading[writer] = None
        try:
            try:
                status, body, ctype = await asyncio.wait_for(
                    self._respond(reader, writer), self.read_timeout_s
                )
            except (asyncio.LimitOverrunError, ValueError):  # the head passed the reader's limit
                status, body, ctype = (
                    "431 Request Header Fields Too Large",
                    b"too large\n",
                    "text/plain",
                )
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                status, body, ctype = ("408 Request Timeout", b"request timeout\n", "text/plain")
            if writer.transport.is_closing():  # evicted, or the client went away
                return
            try:
                head = (
                    f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                )
                writer.write(head.encode() + body)
                await asyncio.wait_for(writer.drain(), self.read_timeout_s)
            except (TimeoutError, ConnectionError):
                pass
            finally:
                writer.close()
        finally:
            self._reading.pop(writer, None)
            self._slots.release()

    async def _respond(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, bytes, str]:
        head = await reader.readuntil(b"\r\n\r\n")
        self._reading.pop(writer, None)  # a whole head: no longer evictable
        if len(head) > MAX_REQUEST_BYTES:
            return "431 Request Header Fields Too Large", b"too large\n", "text/plain"
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return "400 Bad Request", b"bad request\n", "text/plain"
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if target not in (b"/metrics", b"/healthz", b"/readyz"):
            return "404 Not Found", b"not found\n", "text/plain"
        if method != b"GET":
            return "405 Method Not Allowed", b"only GET\n", "text/plain"
        if target == b"/metrics":
            return "200 OK", await self._exposition(), "text/plain; version=0.0.4; charset=utf-8"
        if target == b"/healthz":
            return "200 OK", b"ok\n", "text/plain"
        if self.is_ready():
            return "200 OK", b"ready\n", "text/plain"
        return "503 Service Unavailable", b"not ready\n", "text/plain"
