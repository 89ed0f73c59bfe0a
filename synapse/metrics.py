"""Every metric on one registry, and the one HTTP port that serves them.

Metrics are created once per process (``Metrics``) and never re-created on
reload. Labels are bounded: source, route, destination, reason, kind. The hot
path counts per batch, not per event.

The port serves ``GET``/``HEAD`` of ``/metrics``, ``/healthz`` and ``/readyz``
and nothing else (404; other methods 405). It is an asyncio server with a read
deadline per request, a cap on request size, a cap on concurrent connections,
and a cached exposition (rendered at most once per ``cache_s`` per format in a
worker thread), so a burst of scrapes or garbage connections cannot slow
routing. The format and compression are prometheus-client's own choice:
``choose_encoder`` (Prometheus text, or OpenMetrics when the Accept header
asks for it) and ``gzip_accepted``.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder, gzip_accepted

from synapse import __version__
from synapse.errors import REASONS
from synapse.histogram import BulkHistogram

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
        self.latency = BulkHistogram(
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
        self.group_lag = Gauge(
            "synapse_consumer_group_lag",
            "Entries of a destination not yet read by a consuming service's group",
            ["stream", "group"],
            registry=r,
        )
        self.group_pending = Gauge(
            "synapse_consumer_group_pending",
            "Entries of a destination read but not acknowledged by a service's group",
            ["stream", "group"],
            registry=r,
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
        for reason in REASONS:  # at 0 from the start: the first dead letter is an increase
            self.dead_lettered.labels(reason)
        for result in ("success", "failure"):
            self.reloads.labels(result)
        self._config_hash: str | None = None

    def watch_routes(self, routes: Iterable[tuple[str, Iterable[str]]]) -> None:
        """Create each (route, destination) series at 0, so its first copy is an increase
        (an alert on ``increase(...{route="critical-errors"})`` sees the first event)."""
        for route, destinations in routes:
            for dest in destinations:
                self.routed.labels(route, dest)

    def set_config(self, config_hash: str, loaded_at: float) -> None:
        if self._config_hash is not None:
            self.config_info.remove(self._config_hash)
        self._config_hash = config_hash
        self.config_info.labels(config_hash).set(1)
        self.last_reload.set(loaded_at)


def observe_many(histogram: BulkHistogram, amount: float, count: int) -> None:
    """``count`` observations of ``amount`` at once (per batch, not per event)."""
    histogram.observe_many(amount, count)


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
        #: (content type, gzip) -> (rendered at, body): one cached rendering per format.
        self._cached: dict[tuple[str, bool], tuple[float, bytes]] = {}
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

    async def _exposition(self, accept: str, accept_encoding: str) -> tuple[bytes, str, bool]:
        """(body, content type, gzipped): prometheus-client's format and compression choice."""
        encoder, ctype = choose_encoder(accept)
        zipped = gzip_accepted(accept_encoding)
        async with self._render_lock:
            stamp, body = self._cached.get((ctype, zipped), (0.0, b""))
            if time.monotonic() - stamp >= self.cache_s or not body:
                body = await asyncio.to_thread(_render, encoder, self.metrics.registry, zipped)
                self._cached[(ctype, zipped)] = (time.monotonic(), body)
            return body, ctype, zipped

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
                reply = await asyncio.wait_for(self._respond(reader, writer), self.read_timeout_s)
            except (asyncio.LimitOverrunError, ValueError):  # the head passed the reader's limit
                reply = Reply("431 Request Header Fields Too Large", b"too large\n")
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                reply = Reply("408 Request Timeout", b"request timeout\n")
            if writer.transport.is_closing():  # evicted, or the client went away
                return
            try:
                writer.write(reply.encode())
                await asyncio.wait_for(writer.drain(), self.read_timeout_s)
            except (TimeoutError, ConnectionError):
                pass
            finally:
                writer.close()
        finally:
            self._reading.pop(writer, None)
            self._slots.release()

    async def _respond(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Reply:
        head = await reader.readuntil(b"\r\n\r\n")
        self._reading.pop(writer, None)  # a whole head: no longer evictable
        if len(head) > MAX_REQUEST_BYTES:
            return Reply("431 Request Header Fields Too Large", b"too large\n")
        request_line, _, header_block = head.partition(b"\r\n")
        parts = request_line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return Reply("400 Bad Request", b"bad request\n")
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if target not in (b"/metrics", b"/healthz", b"/readyz"):
            return Reply("404 Not Found", b"not found\n")
        if method not in (b"GET", b"HEAD"):
            return Reply("405 Method Not Allowed", b"only GET and HEAD\n", allow=True)
        head_only = method == b"HEAD"
        if target == b"/metrics":
            headers = _headers(header_block)
            body, ctype, zipped = await self._exposition(
                headers.get("accept", ""), headers.get("accept-encoding", "")
            )
            return Reply("200 OK", body, ctype, gzipped=zipped, head_only=head_only)
        if target == b"/healthz":
            return Reply("200 OK", b"ok\n", head_only=head_only)
        if self.is_ready():
            return Reply("200 OK", b"ready\n", head_only=head_only)
        return Reply("503 Service Unavailable", b"not ready\n", head_only=head_only)


class Reply:
    """One HTTP/1.1 response, closed after sending; HEAD gets the headers GET would."""

    __slots__ = ("allow", "body", "ctype", "gzipped", "head_only", "status")

    def __init__(
        self,
        status: str,
        body: bytes,
        ctype: str = "text/plain; charset=utf-8",
        *,
        gzipped: bool = False,
        head_only: bool = False,
        allow: bool = False,
    ) -> None:
        self.status, self.body, self.ctype = status, body, ctype
        self.gzipped, self.head_only, self.allow = gzipped, head_only, allow

    def encode(self) -> bytes:
        lines = [
            f"HTTP/1.1 {self.status}",
            f"Content-Type: {self.ctype}",
            f"Content-Length: {len(self.body)}",
            "Connection: close",
        ]
        if self.gzipped:
            lines.append("Content-Encoding: gzip")
        if self.allow:
            lines.append("Allow: GET, HEAD")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        return head if self.head_only else head + self.body


def _headers(block: bytes) -> dict[str, str]:
    """Request headers by lower-cased name (the last one wins); undecodable bytes replaced."""
    found = {}
    for line in block.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep:
            found[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return found


def _render(
    encoder: Callable[[CollectorRegistry], bytes], registry: CollectorRegistry, zipped: bool
) -> bytes:
    body = encoder(registry)
    return gzip.compress(body, compresslevel=6) if zipped else body
