"""The HTTP side (aiohttp): ``/events``, the live page, ``/streams``, health, metrics.

``/events`` checks the token, the allowlist and the client cap before it holds
anything, then registers the client with the hub, sends what it missed since
its cursor, and streams live events until the client goes, the gateway stops,
or the client falls ``client_buffer_bytes`` behind (then the connection is
aborted and the browser resumes with ``Last-Event-ID``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from importlib import resources

from aiohttp import web

from synapse import log
from synapse.gateway.access import token_ok
from synapse.gateway.catchup import catch_up
from synapse.gateway.channel import SLOW, Shape, Subscriber
from synapse.gateway.cursor import MAX_CURSOR_CHARS, BadCursor, Position, parse_cursor
from synapse.gateway.hub import Hub, NotAStream
from synapse.gateway.metrics import GatewayMetrics
from synapse.gateway.settings import GatewaySettings
from synapse.gateway.sse import KEEPALIVE, PREAMBLE

logger = log.get("synapse.gateway")

MAX_STREAMS_PER_REQUEST = 32
MAX_STREAM_NAME_CHARS = 1024
#: Streams listed by ``GET /streams`` at most.
MAX_LISTED_STREAMS = 1000

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
}
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the page's URL may hold ?token=
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'self'"
    ),
}


#: Kernel send buffer per SSE socket at most (autotuning would let each grow to megabytes).
SEND_BUFFER_MAX_BYTES = 256 * 1024


def _cap_send_buffer(request: web.Request) -> None:
    """Bound the kernel's share of a client's backlog, as ``client_buffer_bytes`` bounds ours."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_MAX_BYTES)


class Gateway:
    """The aiohttp application, the hub, and their lifecycle."""

    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or GatewayMetrics()
        self.hub = Hub(
            settings.url,
            self.metrics,
            block_ms=settings.block_ms,
            client_buffer_bytes=settings.client_buffer_bytes,
        )
        self.store = self.hub.reader.label
        #: The store failing (a response to end, a client to refuse with 503).
        self.store_errors = self.hub.reader.errors
        self.gone: tuple[type[BaseException], ...] = (ConnectionError, *self.store_errors)
        self.policy = settings.policy.with_internal(self.hub.reader.internal_prefixes)
        self.clients = 0  # slots taken, including clients still joining
        self.app = web.Application()
        self.app.add_routes(
            [
                web.get("/events", self.events),
                web.options("/events", self.preflight),
                web.get("/", self.page),
                web.get("/streams", self.streams),
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
                web.get("/metrics", self.metrics_page),
            ]
        )
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port = settings.port

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen and start reading; ``port`` is the bound port (useful with port 0)."""
        self._runner = web.AppRunner(
            self.app,
            handler_cancellation=True,
            access_log=None,
            # Last-Event-ID (or ?last_event_id=) holds a cursor: a pair per Kafka partition
            max_field_size=MAX_CURSOR_CHARS + 1024,
            max_line_size=3 * MAX_CURSOR_CHARS + 4096,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        self._tasks = [
            asyncio.create_task(self.hub.run(), name="gateway-read-loop"),
            asyncio.create_task(self._keepalive(), name="gateway-keepalive"),
        ]

    async def stop(self) -> None:
        """End every client's stream, stop reading, close."""
        self.hub.stop()
        await self.hub.wake_reader()  # the read loop sees the stop flag at once
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            # bounded: a cancel that lands as a read completes may be lost inside the store's
            # client; the loop still ends on the stop flag within one read
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, self.settings.block_ms / 1000 + 5)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.hub.close()

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.settings.keepalive_s)
            self.hub.broadcast(KEEPALIVE)

    # -- /events -------------------------------------------------------------------------

    def _refuse(self, request: web.Request, status: int, reason: str, text: str) -> web.Response:
        self.metrics.refused.labels(reason=reason).inc()
        headers = self.settings.cors.headers(request.headers.get("Origin"))
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="synapse-gateway"'
        if status == 503:
            headers["Retry-After"] = "5"
        return web.Response(status=status, text=text + "\n", headers=headers)

    def _authorized(self, request: web.Request) -> bool:
        return token_ok(
            self.settings.token, request.headers.get("Authorization"), request.query.get("token")
        )

    def _shape(self, request: web.Request) -> Shape | str:
        """The subscription asked for, or the 400 text saying what is wrong."""
        streams = list(dict.fromkeys(request.query.getall("stream", [])))
        if not streams:
            return "give at least one stream: /events?stream=NAME (repeat for more)"
        if len(streams) > MAX_STREAMS_PER_REQUEST:
            return f"at most {MAX_STREAMS_PER_REQUEST} streams per request"
        if any(not s or len(s) > MAX_STREAM_NAME_CHARS for s in streams):
            return f"stream names are 1 to {MAX_STREAM_NAME_CHARS} characters"
        globs = [g for raw in request.query.getall("type", []) for g in raw.split(",") if g]
        named = request.query.get("named", "1").lower() not in ("0", "false", "no")
        return Shape(tuple(streams), tuple(dict.fromkeys(globs)) or None, named)

    async def events(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._refuse(request, 401, "unauthorized", "a token is required")
        shape = self._shape(request)
        if isinstance(shape, str):
            return self._refuse(request, 400, "bad_request", shape)
        refused = [s for s in shape.streams if not self.policy.allows(s)]
        if refused:
            return self._refuse(request, 403, "forbidden", f"stream not served: {refused[0]}")
        last = request.headers.get("Last-Event-ID") or request.query.get("last_event_id", "")
        try:
            cursor = parse_cursor(last, shape.streams, self.hub.codec)
        except BadCursor as exc:
            return self._refuse(request, 400, "bad_request", f"bad Last-Event-ID: {exc}")
        if self.clients >= self.settings.max_clients:
            return self._refuse(request, 503, "over_capacity", "too many clients; retry later")
        self.clients += 1
        try:
            return await self._stream(request, shape, cursor)
        finally:
            self.clients -= 1

    async def _stream(
        self, request: web.Request, shape: Shape, cursor: dict[str, Position]
    ) -> web.StreamResponse:
        transport = request.transport

        def on_drop(reason: str) -> None:
            self.metrics.disconnected.labels(reason=reason).inc()
            if reason == SLOW and transport is not None:
                logger.info("client_dropped_slow", streams=list(shape.streams))
                transport.abort()  # its write may be stuck on a full socket: end it now

        try:
            await self.hub.settle(cursor)
            sub = await self.hub.subscribe(shape, on_drop)
        except NotAStream as exc:
            return self._refuse(request, 400, "not_a_stream", str(exc))
        except self.store_errors as exc:
            logger.warning("client_refused_redis", store=self.store, error=str(exc))
            return self._refuse(
                request, 503, "over_capacity", f"{self.store} is unavailable; retry later"
            )
        self.metrics.connections.inc()
        _cap_send_buffer(request)
        logger.debug(  # never the query string: it may hold the token
            "client_connected",
            streams=list(shape.streams),
            types=list(shape.types or ()),
            resumed=bool(cursor),
            clients=self.hub.subscribers,
        )
        try:
            headers = {**SSE_HEADERS, **self.settings.cors.headers(request.headers.get("Origin"))}
            response = web.StreamResponse(headers=headers)
            if request.version >= (1, 1):
                response.enable_chunked_encoding()  # live chunks are framed once, in channel
            await response.prepare(request)
            await response.write(PREAMBLE)
            await self._send(request, response, sub, cursor)
            return response
        except self.gone:
            return web.StreamResponse()  # the client is gone (or the store failed mid catch-up)
        finally:
            self.hub.unsubscribe(sub)
            logger.debug("client_disconnected", reason=sub.dropped or "closed")

    async def _send(
        self,
        request: web.Request,
        response: web.StreamResponse,
        sub: Subscriber,
        cursor: dict[str, Position],
    ) -> None:
        async for chunk, count in catch_up(self.hub.reader, sub, cursor):
            self.metrics.catchup_events.inc(count)
            if chunk:
                await response.write(chunk)
                self.metrics.sent_bytes.inc(len(chunk))
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        sub.go_live(transport, response.chunked)
        await sub.done.wait()

    async def preflight(self, request: web.Request) -> web.Response:
        headers = self.settings.cors.headers(request.headers.get("Origin"), preflight=True)
        return web.Response(status=204 if headers else 403, headers=headers)

    # -- the page and the small endpoints ------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._refuse(
                request, 401, "unauthorized", "a token is required: open /?token=YOUR_TOKEN"
            )
        html = resources.files("synapse.gateway").joinpath("live.html").read_bytes()
        return web.Response(body=html, content_type="text/html", headers=PAGE_HEADERS)

    async def streams(self, request: web.Request) -> web.Response:
        """The streams this gateway serves that exist now (for the page's picker)."""
        if not self._authorized(request):
            return self._refuse(request, 401, "unauthorized", "a token is required")
        try:
            names = await self.hub.reader.names(self.policy.allows, MAX_LISTED_STREAMS)
        except self.store_errors:
            return web.json_response({"error": f"{self.store} is unavailable"}, status=503)
        return web.json_response({"streams": sorted(names)})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        if self.hub.ready:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {self.store} is not answering\n")

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )
