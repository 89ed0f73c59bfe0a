"""Bench helper process: N Server-Sent Events connections to one gateway, counted and timed.

    python -m bench.sseclients HOST PORT N QUERY

Each connection is a bare asyncio Protocol (no per-message parsing): it counts
messages with ``bytes.count`` and, per socket read, times the oldest event in
it (its ``"pt"`` publish time, so the figure is an upper bound of that read's
latencies). Prints ``ready N`` once every response has started; then answers
``report`` on stdin with a JSON line of counts, and ``stop`` with the final
JSON (latencies included) before exiting.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
import time

PATTERN = b"\ndata: "
RCVBUF_BYTES = 256 * 1024
PT = re.compile(rb'"pt":\s*([0-9.]+)')


class Client(asyncio.Protocol):
    def __init__(self, request: bytes, started: asyncio.Future[None]) -> None:
        self.request = request
        self.started = started
        self.head = b""
        self.streaming = False
        self.count = 0
        self.tail = b""
        self.latencies_ms: list[float] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.streaming:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 200"):
                self.started.set_exception(RuntimeError(self.head[:200].decode(errors="replace")))
                return
            self.streaming = True
            data = self.head[end + 4 :]
            self.head = b""
            if not self.started.done():
                self.started.set_result(None)
        buf = self.tail + data
        self.count += buf.count(PATTERN)
        self.tail = buf[-(len(PATTERN) - 1) :]
        found = PT.search(data)
        if found:
            self.latencies_ms.append((now - float(found.group(1))) * 1000)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


async def main(host: str, port: int, n: int, query: str) -> None:
    loop = asyncio.get_running_loop()
    request = f"GET /events?{query} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
    clients: list[Client] = []
    for i in range(n):
        started: asyncio.Future[None] = loop.create_future()
        # Browsers' receive buffers live on their own machines; here all of them share this
        # host's TCP memory, so keep them to a common size instead of autotuned megabytes.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, port))
        _, client = await loop.create_connection(
            lambda s=started: Client(request.encode(), s), sock=sock
        )
        clients.append(client)
        await asyncio.wait_for(started, 30)
        if i % 100 == 99:
            await asyncio.sleep(0)
    print(f"ready {n}", flush=True)
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        counts = [c.count for c in clients]
        out = {"min": min(counts), "max": max(counts), "closed": sum(c.closed for c in clients)}
        if line == "stop" or not line:
            out["latencies_ms"] = [x for c in clients for x in c.latencies_ms]
            print(json.dumps(out), flush=True)
            return
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
