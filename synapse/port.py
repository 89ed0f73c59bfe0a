"""The one HTTP port: ``/metrics``, ``/healthz`` and ``/readyz``, hardened.

It serves ``GET``/``HEAD`` of those three paths and nothing else (404; other methods 405).
It is an asyncio server with a read deadline per request, a cap on request size, a cap on
concurrent connections, and a cached exposition (rendered at most once per ``cache_s`` per
format in a worker thread), so a burst of scrapes or garbage connections cannot slow
routing. The format and compression are prometheus-client's own choice: ``choose_encoder``
(Prometheus text, or OpenMetrics when the Accept header asks for it) and ``gzip_accepted``.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from synapse.metrics import Metrics

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
