"""What a resuming client missed: from its cursor up to where it joined, per stream.

The subscriber is registered first (its live events buffer from the join
position on), so the range ``(cursor, joined]`` on each stream is exactly what
is missing: no gap, no repeat, for entries the store still retains (on Kafka, on
every partition). The reader fetches it a page at a time (XRANGE on Redis, a
pooled consumer by ``assign`` on Kafka), so the client's socket paces the reads.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

from synapse.gateway.channel import Subscriber
from synapse.gateway.cursor import Codec, Position, format_cursor
from synapse.gateway.sse import message
from synapse.gateway.store import StreamReader

PAGE = 500


def start_positions(
    codec: Codec, sub: Subscriber, cursor: Mapping[str, Position]
) -> dict[str, Position]:
    """Where catch-up starts on each stream: the cursor, never past the join position;
    a stream the cursor does not name starts where it joined (nothing to catch up)."""
    return {
        s: joined if s not in cursor else codec.start(cursor[s], joined)
        for s, joined in sub.joined_at.items()
    }


async def catch_up(
    reader: StreamReader, sub: Subscriber, cursor: Mapping[str, Position], page: int = PAGE
) -> AsyncIterator[tuple[bytes, int]]:
    """(SSE bytes, entries read) per page, from ``cursor`` to ``sub.joined_at``."""
    shape = sub.shape
    codec = reader.codec
    pos = start_positions(codec, sub, cursor)
    for stream in shape.streams:
        end = sub.joined_at[stream]
        if pos[stream] == end or sub.dropped is not None:
            continue
        async with contextlib.aclosing(reader.catch_up(stream, pos[stream], end, page)) as pages:
            async for entries in pages:
                out: list[bytes] = []
                for e in entries:
                    pos[stream] = codec.advance(pos[stream], e.key)
                    if shape.matches(e.type):
                        text = format_cursor(shape.streams, pos, codec)
                        out.append(message(text, e.type if shape.named else None, e.payload))
                yield b"".join(out), len(entries)
                if sub.dropped is not None:
                    break
