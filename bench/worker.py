"""A router process under test: ``python -m bench.worker KIND URL CONSUMER ARGS...``.

``synapse URL CONSUMER CONFIG``, ``baseline URL CONSUMER FANOUT BATCH`` or
``kafkaloop URL CONSUMER BATCH`` (``bench/kafkaloop.py``).

The process sets itself up (imports, table, connections), prints ``ready``,
waits for a line on stdin, then consumes until SIGTERM. The parent measures it
from outside (wall time, psutil CPU times and RSS), so start-up is not counted.

- ``synapse`` runs the daemon's own ``synapse.consumer.Router`` on the table.
- ``kafkaloop`` is the hand-written loop on Kafka (``bench/kafkaloop.py``).
- ``baseline`` is the minimal hand-written loop: XREADGROUP 500, then one
  MULTI/EXEC per batch holding FANOUT XADD copies of each entry and the XACK; no
  parsing, no validation, no table (redis-py asyncio, hiredis parser, no
  per-reply socket timeout).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from bench.workload import GROUP, SOURCE


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop, as the router runs on (``routercli.py``), when it is installed; else
    asyncio's. Every measured loop of the bench runs on it (``bench/clientbench.py`` too)."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def _until_term(work: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await work(stop)


def synapse_worker(url: str, consumer: str, config: str) -> Callable[[asyncio.Event], Any]:
    from synapse import log
    from synapse.config import load_table
    from synapse.consumer import Router
    from synapse.kafka.url import backend_kind
    from synapse.metrics import Metrics

    log.configure("json", "warning")
    table = load_table(config, kind=backend_kind(url))  # as synapse-router loads it

    async def work(stop: asyncio.Event) -> None:
        router = Router(table, url, Metrics(), consumer=consumer)
        task = asyncio.create_task(router.run())
        await stop.wait()
        router.stop()
        await task
        await router.close()

    return work


def baseline_streams(fanout: int) -> list[str]:
    return [f"baseline-{i}" for i in range(1, fanout + 1)]


def baseline_worker(
    url: str, consumer: str, fanout: int, batch: int
) -> Callable[[asyncio.Event], Any]:
    streams = baseline_streams(fanout)

    async def work(stop: asyncio.Event) -> None:
        r = aioredis.Redis.from_url(url, socket_timeout=None, decode_responses=False, protocol=2)
        while not stop.is_set():
            reply: Any = await r.xreadgroup(  # RESP2: [[stream, entries]], or None
                GROUP, consumer, {SOURCE: ">"}, count=batch, block=200
            )
            for _stream, entries in reply or ():
                if not entries:
                    continue
                pipe = r.pipeline(transaction=True)
                for _id, fields in entries:
                    for stream in streams:
                        pipe.xadd(stream, fields)
                pipe.xack(SOURCE, GROUP, *(e[0] for e in entries))
                await pipe.execute()
        await r.aclose()

    return work


def main(argv: list[str]) -> None:
    kind, url, consumer = argv[:3]
    if kind == "synapse":
        work = synapse_worker(url, consumer, argv[3])
    elif kind == "baseline":
        work = baseline_worker(url, consumer, int(argv[3]), int(argv[4]))
    elif kind == "kafkaloop":
        from bench.kafkaloop import kafkaloop_worker

        work = kafkaloop_worker(url, consumer, int(argv[3]))
    else:
        raise SystemExit(f"unknown worker {kind!r}")
    if kind == "synapse":
        from synapse import gctune

        gctune.tune()  # as synapse-router does
    print("ready", flush=True)
    sys.stdin.readline()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_until_term(work))


if __name__ == "__main__":
    main(sys.argv[1:])
