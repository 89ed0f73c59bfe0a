"""A subscriber process for the reliability tests: every handled event is a ledger line.

    python -m tests.client.worker --service S --stream jobs --ledger FILE [options]

Each handler call appends ``start <ledger> <entry> <pid> <deliveries>`` when it begins
and ``done <ledger> <entry> <pid> <deliveries>`` when it returns (one O_APPEND write
each, so lines from several processes never interleave). An event whose body has
``fail`` raises while the file named by ``--fail-while`` exists (always, without it).
``ready`` is printed once the subscriber is reading.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from synapse.client import Bus, Event


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--service", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--ledger", type=Path, required=True)
    parser.add_argument("--dedupe-s", type=float)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-deliveries", type=int, default=5)
    parser.add_argument("--retry-backoff-s", type=float, default=0.2)
    parser.add_argument("--claim-idle-ms", type=int, default=1000)
    parser.add_argument("--sleep-ms", type=int, default=0)
    parser.add_argument("--fail-while", type=Path)
    parser.add_argument("--start", default="earliest")
    args = parser.parse_args()
    fd = os.open(args.ledger, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    pid = os.getpid()
    bus = Bus(args.service, block_ms=200)

    def note(kind: str, event: Event) -> None:
        line = f"{kind} {event.data.get('n')} {event.entry_id} {pid} {event.deliveries}\n"
        os.write(fd, line.encode())

    @bus.subscribe(
        args.stream,
        concurrency=args.concurrency,
        max_deliveries=args.max_deliveries,
        retry_backoff_s=args.retry_backoff_s,
        dedupe_s=args.dedupe_s,
        claim_idle_ms=args.claim_idle_ms,
        start=args.start,
    )
    async def handle(event: Event) -> None:
        note("start", event)
        if args.sleep_ms:
            await asyncio.sleep(args.sleep_ms / 1000)
        if event.data.get("fail") and (args.fail_while is None or args.fail_while.exists()):
            raise RuntimeError(f"cannot handle {event.data.get('n')}")
        note("done", event)

    async def run() -> None:
        async def announce() -> None:
            # no event to wait on: readiness is a flag the subscriber sets
            while bus.subscriber is None or not bus.subscriber.ready:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            print("ready", flush=True)

        task = asyncio.create_task(announce())
        await bus.run()
        task.cancel()

    asyncio.run(run())


if __name__ == "__main__":
    main()
