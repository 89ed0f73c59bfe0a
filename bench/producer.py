"""A producer under measurement: ``python -m bench.producer KIND ADDRESS COUNT RATE WINDOW``.

``KIND`` is ``bus`` (ADDRESS: a redis:// URL; ``synapse.client.Bus.publish_many``
of ``CHUNK`` events at a time, ``WINDOW / CHUNK`` chunks in flight, each event in
the CloudEvents envelope a service writes), ``redis`` (ADDRESS: the port or a unix
socket path; pipelined XADD of the bare fields to the source stream, hiredis-packed;
the paced latency runs use it, since the publish time rides in a field of its own)
or ``nats`` (ADDRESS: the server URL; nats-py publishes to
``events.<type>`` with a reply inbox, the JetStream acknowledgements counted as
they come back; each event validated first with fastjsonschema, since with
NATS nothing validates after the producer). ``RATE`` 0 publishes as fast as the
acknowledgements allow, with at most ``WINDOW`` unacknowledged; a positive
``RATE`` paces to that many events/s and stamps each event with
``time.time_ns()`` (a field, or a header on NATS) for the latency readers.

Like ``bench.worker``: it builds its events and connections, prints ``ready``,
publishes on a line from stdin, prints ``done SENT``, then waits to be
terminated, so the parent can still read its CPU times.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import hiredis
import orjson

from bench.workload import SOURCE, TS_FIELD, _drain, events, family_schemas

CHUNK = 100  # events per write: a producer batching what its callers hand it
NATS_TS = "Bench-Ts"


def corpus(count: int) -> list[list[bytes]]:
    return list(events(count))


def connect(address: str) -> socket.socket:
    """A TCP port on 127.0.0.1, or the path of the server's unix socket."""
    if address.isdigit():
        sock = socket.create_connection(("127.0.0.1", int(address)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(address)
    return sock


def redis_publish(address: str, entries: list[list[bytes]], rate: int, window: int) -> int:
    """XADD every entry, pipelined, at most ``window`` unacknowledged."""
    reader = hiredis.Reader()
    last = [b""]
    step = min(CHUNK, window)
    with connect(address) as sock:
        pending, sent, started = 0, 0, time.perf_counter()
        while sent < len(entries):
            due = _due(started, sent, len(entries), step, rate)
            if due <= 0:
                time.sleep(0.0005)
                continue
            stamp = (TS_FIELD, str(time.time_ns()).encode()) if rate else ()
            sock.sendall(
                b"".join(
                    hiredis.pack_command(("XADD", SOURCE, "*", *fields, *stamp))
                    for fields in entries[sent : sent + due]
                )
            )
            sent += due
            pending = _drain(sock, reader, pending + due, max(0, window - step), last)
        _drain(sock, reader, pending, 0, last)
    return len(entries)


def _due(started: float, sent: int, total: int, step: int, rate: int) -> int:
    """Events to write now: a full step back to back, or what the pace ``rate`` owes."""
    if not rate:
        return min(step, total - sent)
    return min(total, int((time.perf_counter() - started) * rate)) - sent


async def bus_publish(url: str, entries: list[list[bytes]], window: int) -> int:
    """``Bus.publish_many`` of every entry as (type, body), ``window`` events in flight."""
    from synapse.client import Bus

    items = [(f[1].decode(), orjson.loads(f[3])) for f in entries]
    bus = Bus("bench-producer", url=url, stream=SOURCE, register=False)
    chunks = iter(range(0, len(items), CHUNK))

    async def lane() -> None:
        for start in chunks:  # shared: each lane takes the next chunk
            await bus.publish_many(items[start : start + CHUNK])

    try:
        await asyncio.gather(*(lane() for _ in range(max(1, window // CHUNK))))
    finally:
        await bus.close()
    return len(items)


def validators() -> dict[str, Callable[[Any], Any]]:
    """fastjsonschema validators of the shipped schemas, by event family."""
    import fastjsonschema

    return {family: fastjsonschema.compile(schema) for family, schema in family_schemas().items()}


async def nats_publish(url: str, entries: list[list[bytes]], rate: int, window: int) -> int:
    """Validate and publish every entry with a reply inbox; wait for every ack."""
    import nats

    check = validators()
    bodies = [orjson.loads(f[3]) for f in entries]
    nc = await nats.connect(url, pending_size=8 << 20)
    inbox = nc.new_inbox()
    acked, errors = 0, []
    room = asyncio.Event()

    async def on_ack(msg: Any) -> None:
        nonlocal acked
        acked += 1
        if b'"error"' in msg.data:
            errors.append(msg.data)
        room.set()

    await nc.subscribe(inbox, cb=on_ack)
    sent, started, step = 0, time.perf_counter(), min(CHUNK, window)
    while sent < len(entries):
        due = _due(started, sent, len(entries), step, rate)
        if due <= 0:
            await asyncio.sleep(0.0005)
            continue
        headers = {NATS_TS: str(time.time_ns())} if rate else None
        for i in range(sent, sent + due):
            fields = entries[i]
            event_type = fields[1].decode()
            check[event_type.split(".", 1)[0]](bodies[i])
            await nc.publish("events." + event_type, fields[3], reply=inbox, headers=headers)
        sent += due
        while sent - acked > window:
            room.clear()
            await room.wait()
    await nc.flush()
    while acked < sent:
        room.clear()
        await room.wait()
    await nc.close()
    if errors:
        raise RuntimeError(f"{len(errors)} publishes refused, first: {errors[0]!r}")
    return sent


def main(argv: list[str]) -> None:
    kind, address, count, rate, window = argv[0], argv[1], *map(int, argv[2:5])
    entries = corpus(count)
    if kind == "nats":
        validators()  # import and compile before "ready"
    print("ready", flush=True)
    sys.stdin.readline()
    if kind == "bus" and not rate:
        sent = asyncio.run(bus_publish(address, entries, window))
    elif kind in ("redis", "bus"):
        sent = redis_publish(address, entries, rate, window)
    elif kind == "nats":
        sent = asyncio.run(nats_publish(address, entries, rate, window))
    else:
        raise SystemExit(f"unknown producer {kind!r}")
    print(f"done {sent}", flush=True)
    sys.stdin.readline()  # held open until the parent has read our CPU times


if __name__ == "__main__":
    main(sys.argv[1:])
