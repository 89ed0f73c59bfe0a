"""The one port, in-process: GET/HEAD only, 404 elsewhere, bounded requests, slow clients cut
off; the exposition format and compression negotiated by prometheus-client's own choice."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator

import pytest

from synapse.metrics import Metrics
from synapse.port import MAX_REQUEST_BYTES, MetricsServer
from tests.conftest import wait_for

TIMEOUT_S = 1.0


class Port:
    def __init__(self, server: MetricsServer, metrics: Metrics) -> None:
        self.server = server
        self.metrics = metrics
        self.ready = False


@pytest.fixture
async def port() -> AsyncIterator[Port]:
    metrics = Metrics()
    holder: list[Port] = []
    server = MetricsServer(metrics, lambda: holder[0].ready, read_timeout_s=TIMEOUT_S)
    holder.append(Port(server, metrics))
    await server.start("127.0.0.1", 0)
    try:
        yield holder[0]
    finally:
        await server.close()


async def exchange(port: Port, raw: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send raw bytes; (status line, headers by lower-case name, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port.server.port)
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


async def request(port: Port, raw: bytes) -> tuple[str, bytes]:
    """Send raw bytes, read the whole response; (status line, body)."""
    status, _, body = await exchange(port, raw)
    return status, body


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


async def test_metrics_exposition(port: Port) -> None:
    """GET /metrics serves the Prometheus text with the synapse_ metrics."""
    port.metrics.consumed.labels("ingress").inc(3)
    status, body = await request(port, get("/metrics"))
    assert status == "HTTP/1.1 200 OK"
    text = body.decode()
    assert 'synapse_events_consumed_total{source="ingress"} 3.0' in text
    assert "synapse_build_info{" in text
    assert "synapse_redis_up 0.0" in text


async def test_healthz_and_query_strings(port: Port) -> None:
    """/healthz answers 200 while the process lives; a query string is ignored."""
    assert await request(port, get("/healthz")) == ("HTTP/1.1 200 OK", b"ok\n")
    assert (await request(port, get("/healthz?verbose=1")))[0] == "HTTP/1.1 200 OK"


async def test_readyz_follows_readiness(port: Port) -> None:
    """/readyz is 503 until the router is ready, then 200."""
    assert (await request(port, get("/readyz")))[0] == "HTTP/1.1 503 Service Unavailable"
    port.ready = True
    assert (await request(port, get("/readyz")))[0] == "HTTP/1.1 200 OK"
    port.ready = False
    assert (await request(port, get("/readyz")))[0] == "HTTP/1.1 503 Service Unavailable"


@pytest.mark.parametrize("path", ["/", "/metrics/x", "/favicon.ico", "/READYZ", "/../metrics"])
async def test_unknown_paths_404(port: Port, path: str) -> None:
    """Anything but the three paths is 404."""
    assert (await request(port, get(path)))[0] == "HTTP/1.1 404 Not Found"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
async def test_only_get_and_head(port: Port, method: str) -> None:
    """Other methods on a known path are 405, saying which are allowed."""
    status, headers, _ = await exchange(port, get("/metrics", method))
    assert status == "HTTP/1.1 405 Method Not Allowed"
    assert headers["allow"] == "GET, HEAD"


def with_headers(path: str, method: str = "GET", **headers: str) -> bytes:
    extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz"])
async def test_head_gives_the_headers_of_get_and_no_body(port: Port, path: str) -> None:
    """HEAD answers like GET (status, type, length) without the body."""
    port.ready = True
    status_get, headers_get, body = await exchange(port, get(path))
    status, headers, nothing = await exchange(port, get(path, "HEAD"))
    assert status == status_get == "HTTP/1.1 200 OK"
    assert nothing == b"" and body
    assert headers["content-type"] == headers_get["content-type"]
    assert int(headers["content-length"]) == len(body)


async def test_metrics_gzip_when_accepted(port: Port) -> None:
    """Accept-Encoding: gzip gets the same exposition gzipped; no header gets it plain."""
    port.metrics.consumed.labels("ingress").inc(5)
    _, headers, zipped = await exchange(
        port, with_headers("/metrics", Accept_Encoding="br;q=1.0, gzip;q=0.8")
    )
    assert headers["content-encoding"] == "gzip"
    assert int(headers["content-length"]) == len(zipped)
    _, plain_headers, plain = await exchange(port, get("/metrics"))
    assert "content-encoding" not in plain_headers
    assert gzip.decompress(zipped) == plain
    assert b'synapse_events_consumed_total{source="ingress"} 5.0' in plain


async def test_metrics_openmetrics_when_asked(port: Port) -> None:
    """Accept: application/openmetrics-text gets OpenMetrics (with # EOF); else 0.0.4 text."""
    port.metrics.latency.observe_many(0.002, 3)
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    _, headers, body = await exchange(port, with_headers("/metrics", Accept=accept))
    assert headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    assert b'synapse_event_latency_seconds_bucket{le="0.0025"} 3' in body
    _, headers, body = await exchange(port, get("/metrics"))
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert b"# EOF" not in body


@pytest.mark.parametrize(
    "raw", [b"garbage\r\n\r\n", b"GET /metrics\r\n\r\n", b"GET /metrics SPDY/1\r\n\r\n"]
)
async def test_malformed_request_400(port: Port, raw: bytes) -> None:
    """A request line that is not METHOD TARGET HTTP/x is 400."""
    assert (await request(port, raw))[0] == "HTTP/1.1 400 Bad Request"


async def test_oversized_header_refused(port: Port) -> None:
    """A request head larger than the cap is refused with 431, without waiting for a timeout."""
    raw = b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * (MAX_REQUEST_BYTES + 1000) + b"\r\n\r\n"
    started = time.monotonic()
    status, body = await request(port, raw)
    assert status == "HTTP/1.1 431 Request Header Fields Too Large"
    assert b"synapse_" not in body
    assert time.monotonic() - started < TIMEOUT_S


async def test_slow_client_cut_off_without_blocking_others(port: Port) -> None:
    """A client that sends nothing gets 408 after the read timeout; others are served meanwhile."""
    slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port.server.port)
    trickle_reader, trickle_writer = await asyncio.open_connection("127.0.0.1", port.server.port)
    trickle_writer.write(b"GET /metrics HTTP/1.1\r\n")  # never finishes its head
    await trickle_writer.drain()
    started = time.monotonic()
    for _ in range(5):
        assert (await request(port, get("/healthz")))[0] == "HTTP/1.1 200 OK"
        assert (await request(port, get("/metrics")))[0] == "HTTP/1.1 200 OK"
    assert time.monotonic() - started < TIMEOUT_S  # served while the slow ones wait
    for reader, writer in ((slow_reader, slow_writer), (trickle_reader, trickle_writer)):
        data = await asyncio.wait_for(reader.read(), TIMEOUT_S * 10)
        writer.close()
        assert data.startswith(b"HTTP/1.1 408 Request Timeout")
    assert time.monotonic() - started >= TIMEOUT_S * 0.9


async def test_exposition_is_cached(port: Port) -> None:
    """Scrapes within cache_s share one rendering (a burst of scrapes costs one render)."""
    first = (await request(port, get("/metrics")))[1]
    port.metrics.consumed.labels("later").inc()
    second = (await request(port, get("/metrics")))[1]
    assert first == second
    port.server.cache_s = 0
    third = (await request(port, get("/metrics")))[1]
    assert b'source="later"' in third


async def test_idle_connections_never_lock_a_scrape_out(port: Port) -> None:
    """With every slot held by silent clients, a scrape evicts the oldest and is served at once."""
    from synapse.port import MAX_CONNECTIONS

    idle = [
        await asyncio.open_connection("127.0.0.1", port.server.port)
        for _ in range(MAX_CONNECTIONS + 8)
    ]
    try:
        # every slot is held by a silent client before the scrape arrives
        await wait_for(lambda: len(port.server._reading) == MAX_CONNECTIONS, what="slots full")
        started = time.monotonic()
        status, _ = await asyncio.wait_for(request(port, get("/healthz")), TIMEOUT_S / 2)
        assert status == "HTTP/1.1 200 OK"
        assert time.monotonic() - started < TIMEOUT_S / 2
    finally:
        for _, writer in idle:
            writer.close()
