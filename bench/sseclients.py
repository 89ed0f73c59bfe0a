"""Bench helper process: N Server-Sent Events connections to one gateway, counted and timed.

    python -m bench.sseclients HOST PORT N QUERY

Each connection is a bare asyncio Protocol (no per-message parsing): it counts
complete events with ``bytes.count`` and, per socket read, times the oldest
event in it (its ``"pt"`` publish time, so the figure is an upper bound of that
read's latencies). A connection the gateway drops (too slow) reconnects with
``Last-Event-ID``, as a browser does: counts go on, and must end exact. Prints
``ready N`` once every response has started; then answers ``report`` on stdin
with a JSON line of counts, and ``stop`` with the final JSON (latencies
included) before exiting.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
import time
from typing import Any

PATTERN = b"}\n\n"
RCVBUF_BYTES = 256 * 1024
TAIL_BYTES = 8192  # kept between reads: a pattern or an id line may straddle two
PT = re.compile(rb'"pt":\s*([0-9.]+)')


class Client(asyncio.Protocol):
    """One browser-like subscriber: reconnects with Last-Event-ID when the gateway drops it."""

    def __init__(self, host: str, port: int, query: str) -> None:
        self.host, self.port, self.query = host, port, query
        self.started: asyncio.Future[None] | None = None
        self.head = b""
        self.streaming = False
        self.count = 0
        self.tail = b""
        self.last_id = ""
        self.latencies_ms: list[float] = []
        self.reconnects = 0
        self.stopping = False

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self.started = loop.create_future()
        self.head, self.streaming, self.tail = b"", False, b""
        # Browsers' receive buffers live on their own machines; here all of them share this
        # host's TCP memory, so keep them to a common size instead of autotuned megabytes.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        sock.setblocking(False)
        await loop.sock_connect(sock, (self.host, self.port))
        await loop.create_connection(lambda: self, sock=sock)
        await asyncio.wait_for(self.started, 30)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        resume = f"Last-Event-ID: {self.last_id}\r\n" if self.last_id else ""
        request = (
            f"GET /events?{self.query} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Accept: text/event-stream\r\n{resume}\r\n"
        )
        transport.write(request.encode())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.streaming:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            assert self.started is not None
            if not self.head.startswith(b"HTTP/1.1 200"):
                self.started.set_exception(RuntimeError(self.head[:200].decode(errors="replace")))
                return
            self.streaming = True
            data = self.head[end + 4 :]
            self.head = b""
            if not self.started.done():
                self.started.set_result(None)
        # complete events end with the JSON's "}" and a blank line (comments do not);
        # counting in (the last bytes before + data) counts one split by a read once
        self.count += (self.tail[-(len(PATTERN) - 1) :] + data).count(PATTERN)
        buf = self.tail + data
        end = buf.rfind(PATTERN)
        start = buf.rfind(b"\nid: ", 0, end) if end >= 0 else -1
        if start >= 0:  # the id of the last complete event, as a browser keeps it
            self.last_id = buf[start + 5 : buf.find(b"\n", start + 5)].decode()
        self.tail = buf[-TAIL_BYTES:]
        found = PT.search(data)
        if found:
            self.latencies_ms.append((now - float(found.group(1))) * 1000)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.stopping:  # dropped as too slow: resume like a browser does
            self.reconnects += 1
            asyncio.get_running_loop().create_task(self.connect())


async def main(host: str, port: int, n: int, query: str) -> None:
    loop = asyncio.get_running_loop()
    clients: list[Client] = []
    for i in range(n):
        client = Client(host, port, query)
        await client.connect()
        clients.append(client)
        if i % 100 == 99:
            await asyncio.sleep(0)
    print(f"ready {n}", flush=True)
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        counts = [c.count for c in clients]
        out: dict[str, Any] = {
            "min": min(counts),
            "max": max(counts),
            "reconnects": sum(c.reconnects for c in clients),
        }
        if line == "stop" or not line:
            for c in clients:
                c.stopping = True
            out["latencies_ms"] = [x for c in clients for x in c.latencies_ms]
            print(json.dumps(out), flush=True)
            return
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
