"""The reader's linger: after a read that was neither empty nor full, the next one waits."""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio as aioredis

from synapse.config import RouterSettings
from synapse.reads import Reads
from tests.support.polling import wait_for

SOURCE = "linger-src"
GROUP = "g"


def settings(linger_ms: int, batch: int = 10) -> RouterSettings:
    return RouterSettings(group=GROUP, batch=batch, block_ms=2000, linger_ms=linger_ms)


def entries_of(read: object) -> list[int]:
    assert isinstance(read, list)
    return [len(b.entries) for b in read]


async def blocked(aclient: aioredis.Redis) -> int:
    info = await aclient.info("clients")
    return int(info["blocked_clients"])


async def test_after_an_unfilled_read_the_next_waits_and_gathers(
    url: str, r: redis.Redis, aclient: aioredis.Redis
) -> None:
    """While lingering no read is on the wire; entries written meanwhile come in one batch."""
    r.xgroup_create(SOURCE, GROUP, "0", mkstream=True)
    reads = Reads(url, None, "c", 2000, stopping=asyncio.Event())
    try:
        r.xadd(SOURCE, {"n": "0"})
        assert entries_of(await reads.next(settings(1000), [SOURCE])) == [1]
        assert reads.unfilled
        nxt = asyncio.ensure_future(reads.next(settings(1000), [SOURCE]))
        await aclient.xadd(SOURCE, {"n": "1"})
        await aclient.xadd(SOURCE, {"n": "2"})
        assert await blocked(aclient) == 0 and not nxt.done()  # lingering, nothing sent
        assert entries_of(await nxt) == [2]
    finally:
        await reads.close()


async def test_stop_ends_the_linger_without_reading(
    url: str, r: redis.Redis, aclient: aioredis.Redis
) -> None:
    """A stop while lingering returns None at once; entries written meanwhile stay unread."""
    r.xgroup_create(SOURCE, GROUP, "0", mkstream=True)
    stopping = asyncio.Event()
    reads = Reads(url, None, "c", 2000, stopping=stopping)
    try:
        r.xadd(SOURCE, {"n": "0"})
        await reads.next(settings(1000), [SOURCE])
        nxt = asyncio.ensure_future(reads.next(settings(1000), [SOURCE]))
        await aclient.xadd(SOURCE, {"n": "1"})
        stopping.set()
        await wait_for(nxt.done, 0.5, "the lingering read to end on stop")
        assert nxt.result() is None
        assert r.xpending(SOURCE, GROUP)["pending"] == 1  # only the first read's entry
    finally:
        await reads.close()


async def test_full_or_empty_reads_do_not_linger(
    url: str, r: redis.Redis, aclient: aioredis.Redis
) -> None:
    """A full batch (a backlog) or an empty read (idle) is followed by an immediate read;
    linger_ms 0 never lingers."""
    r.xgroup_create(SOURCE, GROUP, "0", mkstream=True)
    reads = Reads(url, None, "c", 2000, stopping=asyncio.Event())
    try:
        for n in range(3):
            r.xadd(SOURCE, {"n": str(n)})
        assert entries_of(await reads.next(settings(1000, batch=2), [SOURCE])) == [2]
        assert not reads.unfilled  # full
        assert entries_of(await reads.next(settings(1000, batch=2), [SOURCE], 10)) == [1]
        assert reads.unfilled
        assert entries_of(await reads.next(settings(0, batch=2), [SOURCE], 10)) == []
        assert not reads.unfilled  # empty: the BLOCK timed out
        nxt = asyncio.ensure_future(reads.next(settings(1000), [SOURCE]))
        await wait_for(lambda: blocked(aclient), 5, "the read to block at once")
        await aclient.xadd(SOURCE, {"n": "3"})
        assert entries_of(await nxt) == [1]
    finally:
        await reads.close()
