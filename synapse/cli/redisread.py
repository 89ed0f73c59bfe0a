"""Reading Redis streams for the commands: raw calls, ranges page by page, counts, last id."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from synapse.cli.connection import Client
from synapse.cli.output import text
from synapse.cli.times import next_id

Entry = tuple[bytes, list[bytes]]


def call(client: Client, *args: Any) -> Any:
    """One raw command (entries come back flat, see connection.connect)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def xrange(client: Client, stream: str, start: str, end: str, count: int) -> list[Entry]:
    reply = call(client, "XRANGE", stream, start, end, "COUNT", count)
    return [(e[0], list(e[1] or [])) for e in reply]


def scan_range(
    client: Client, stream: str, start: str = "-", end: str = "+", page: int = 500
) -> Iterator[Entry]:
    """Every entry of ``stream`` from ``start`` to ``end`` (inclusive), page by page."""
    while True:
        batch = xrange(client, stream, start, end, page)
        yield from batch
        if len(batch) < page:
            return
        start = next_id(batch[-1][0])


#: Counts the entries of KEYS[1] from ARGV[1] to ARGV[2] (inclusive), at most ARGV[3] of
#: them per call; returns {count, next start or ""} so a long range is counted in slices.
COUNT_LUA = """
local n, start, stop, cap = 0, ARGV[1], ARGV[2], tonumber(ARGV[3])
while n < cap do
  local page = redis.call('XRANGE', KEYS[1], start, stop, 'COUNT', 1000)
  n = n + #page
  if #page < 1000 then return {n, ''} end
  start = '(' .. page[#page][1]
end
return {n, start}
"""


def count_range(client: Client, stream: str, start: str = "-", end: str = "+") -> int:
    """How many entries ``stream`` holds from ``start`` to ``end`` (inclusive), counted on the
    server in slices of 20k (no entry crosses the network; a slice blocks Redis ~ms)."""
    script = client.register_script(COUNT_LUA)
    total, at = 0, start
    while at:
        n, at_raw = script(keys=[stream], args=[at, end, 20_000])
        total += int(n)
        at = text(at_raw)
    return total


def last_id(client: Client, stream: str) -> str | None:
    reply = call(client, "XREVRANGE", stream, "+", "-", "COUNT", 1)
    return text(reply[0][0]) if reply else None
