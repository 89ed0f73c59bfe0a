"""What a resuming client missed: XRANGE from its cursor up to where it joined.

The subscriber is registered first (its live events buffer from the join
position on), so the range ``(cursor, joined]`` on each stream is exactly what
is missing: no gap, no repeat, for entries Redis still retains. Pages are
yielded one at a time so the client's socket paces the reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import redis.asyncio as aioredis

from synapse.gateway.channel import Subscriber
from synapse.gateway.cursor import IdKey, format_cursor, id_key, id_text
from synapse.gateway.redisconn import call
from synapse.gateway.sse import entry, message

PAGE = 500


def start_positions(sub: Subscriber, cursor: Mapping[str, IdKey]) -> dict[str, IdKey]:
    """Where catch-up starts on each stream: the cursor, never past the join position."""
    return {s: min(cursor.get(s, joined), joined) for s, joined in sub.joined_at.items()}


async def catch_up(
    client: aioredis.Redis, sub: Subscriber, cursor: Mapping[str, IdKey], page: int = PAGE
) -> AsyncIterator[tuple[bytes, int]]:
    """(SSE bytes, entries read) per page, from ``cursor`` to ``sub.joined_at``."""
    shape = sub.shape
    pos = start_positions(sub, cursor)
    for stream in shape.streams:
        end = sub.joined_at[stream]
        while pos[stream] < end and sub.dropped is None:
            ms, seq = pos[stream]
            reply = await call(
                client, "XRANGE", stream, f"{ms}-{seq + 1}", id_text(end), "COUNT", page
            )
            if not reply:
                break
            out: list[bytes] = []
            for raw_id, fields in reply:
                entry_id = raw_id.decode()
                key = id_key(entry_id)
                pos[stream] = key
                e = entry(stream, entry_id, key, fields)
                if shape.matches(e.type):
                    cursor_text = format_cursor(shape.streams, pos)
                    out.append(message(cursor_text, e.type if shape.named else None, e.payload))
            yield b"".join(out), len(reply)
            if len(reply) < page:
                break
