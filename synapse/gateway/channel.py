"""Fan-out without copies: channels of identical subscriptions, bounded subscribers.

Every client with the same (streams, type globs, named) sees the same bytes:
a ``Channel`` encodes each read once (the cursor in ``id:`` is the shared read
position, which all of its live clients have reached) and hands the same
``bytes`` object (framed once as an HTTP chunk) to each ``Subscriber``, which
writes it to its socket without a task switch. Bytes a client has not taken,
in our buffer or its transport's, are bounded by ``limit_bytes``; past that it
is dropped (its client reconnects with ``Last-Event-ID`` and catches up from
the store), so a client that cannot keep up never slows the others and never grows
the gateway's memory. No I/O of its own, no clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Protocol

from synapse.gateway.cursor import REDIS, Codec, Position, escape
from synapse.gateway.sse import Entry, message

#: Why a subscriber stopped: metric label values.
SLOW = "slow"
SHUTDOWN = "shutdown"
NOT_A_STREAM = "not_a_stream"

#: Distinct event types remembered per channel for the type filter.
TYPE_CACHE_MAX = 4096


@dataclass(frozen=True, slots=True)
class Shape:
    """What a client asked for; equal shapes share one channel."""

    streams: tuple[str, ...]
    types: tuple[str, ...] | None
    named: bool

    def matches(self, event_type: str) -> bool:
        return self.types is None or any(fnmatchcase(event_type, g) for g in self.types)


class Writer(Protocol):
    """The part of an asyncio transport a live subscriber writes to."""

    def write(self, data: bytes) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def is_closing(self) -> bool: ...


def frame(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk (the response is chunked; encoded once per read)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class Subscriber:
    """One client: bounded bytes in flight; written straight to its socket once live.

    While it catches up, live chunks wait in ``chunks``. ``go_live`` writes them
    and from then on every push goes to the transport at once (no task switch
    per client per read). The bound is the same in both phases: bytes waiting,
    here or in the transport's buffer, past ``limit_bytes`` drop the client.
    """

    def __init__(self, shape: Shape, limit_bytes: int, on_drop: Callable[[str], None]) -> None:
        self.shape = shape
        self.limit_bytes = limit_bytes
        self.on_drop = on_drop
        self.chunks: list[bytes] = []
        self.pending_bytes = 0
        self.done = asyncio.Event()
        self.dropped: str | None = None
        self.writer: Writer | None = None
        self.chunked = True
        #: Set by the hub once the subscriber is registered: where it joined the channel.
        self.joined_at: dict[str, Position] = {}

    def push(self, data: bytes, framed: bytes) -> None:
        """Queue or write one chunk (``framed`` is ``data`` as an HTTP chunk)."""
        if self.dropped is not None:
            return
        writer = self.writer
        if writer is None:
            # A client is behind when bytes are still waiting and this would pass the
            # limit (one read larger than the limit alone is fine: it is shared).
            if self.chunks and self.pending_bytes + len(data) > self.limit_bytes:
                self.drop(SLOW)
                return
            self.pending_bytes += len(data)
            self.chunks.append(data)
            return
        if writer.is_closing():  # gone; its handler is being cancelled
            return
        waiting = writer.get_write_buffer_size()
        if waiting and waiting + len(framed) > self.limit_bytes:
            self.drop(SLOW)
            return
        writer.write(framed if self.chunked else data)

    def go_live(self, writer: Writer, chunked: bool) -> None:
        """Write what waited, then write every later push directly."""
        if self.dropped is not None:
            return
        self.writer, self.chunked = writer, chunked
        if self.chunks:
            data = b"".join(self.chunks)
            self.chunks, self.pending_bytes = [], 0
            writer.write(frame(data) if chunked else data)

    def drop(self, reason: str) -> None:
        """Stop this subscriber: free its buffer and let its handler end the response."""
        if self.dropped is not None:
            return
        self.dropped = reason
        self.chunks = []
        self.pending_bytes = 0
        self.done.set()
        self.on_drop(reason)


class Channel:
    """The subscribers of one ``Shape`` and the encoding they share."""

    def __init__(
        self, shape: Shape, positions: Mapping[str, Position], codec: Codec = REDIS
    ) -> None:
        self.shape = shape
        self.positions = positions  # the hub's read positions (shared, live)
        self.codec = codec
        self.subscribers: set[Subscriber] = set()
        self._types: dict[str, bool] = {}
        self._out: list[bytes] = []
        self._names = {s: escape(s) for s in shape.streams}
        self.largest_chunk = 0  # bytes of the largest read handed out (memory accounting)

    def wants(self, event_type: str) -> bool:
        found = self._types.get(event_type)
        if found is None:
            found = self.shape.matches(event_type)
            if len(self._types) >= TYPE_CACHE_MAX:
                self._types.clear()
            self._types[event_type] = found
        return found

    def cursor_with(self, stream: str, own: str) -> str:
        """The cursor at the hub's positions, with ``stream``'s pairs ``own``."""
        if len(self.shape.streams) == 1:
            return own
        text = self.codec.text
        return ",".join(
            own if s == stream else text(self._names[s], self.positions[s])
            for s in self.shape.streams
        )

    def collect(self, stream: str, read: Read) -> int:
        """Encode the entries of ``read`` (from ``stream``) this channel wants; how many."""
        kept = 0
        named = self.shape.named
        for i, e in enumerate(read.entries):
            if self.wants(e.type):
                cursor = self.cursor_with(stream, read.text(i))
                self._out.append(message(cursor, e.type if named else None, e.payload))
                kept += 1
        return kept

    def flush(self) -> int:
        """Hand what was collected to every subscriber (one shared chunk); bytes sent."""
        if not self._out:
            return 0
        chunk = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out = []
        return self.broadcast(chunk)

    def broadcast(self, chunk: bytes) -> int:
        framed = frame(chunk)
        self.largest_chunk = max(self.largest_chunk, len(framed))
        for sub in tuple(self.subscribers):
            sub.push(chunk, framed)
        return len(chunk) * len(self.subscribers)


class Read:
    """The new entries of one stream in one read, each with the stream's position after
    it; the cursor text of each position is written once, when a channel first asks."""

    def __init__(self, name: str, codec: Codec) -> None:
        self.name = escape(name)
        self.codec = codec
        self.entries: list[Entry] = []
        self.after: list[Position] = []
        self._texts: list[str | None] = []

    def add(self, e: Entry, pos: Position) -> None:
        self.entries.append(e)
        self.after.append(pos)
        self._texts.append(None)

    def text(self, i: int) -> str:
        found = self._texts[i]
        if found is None:
            found = self._texts[i] = self.codec.text(self.name, self.after[i])
        return found


@dataclass(frozen=True, slots=True)
class Tally:
    """What one read did: entries read, writes handed out, bytes, first entry's ms."""

    read: int
    deliveries: int
    sent_bytes: int
    first_ms: int


#: One read as a reader returns it: (stream, its entries in order), per stream.
Batches = Sequence[tuple[str, Sequence[Entry]]]


def fan_out(
    batches: Batches,
    positions: dict[str, Position],
    channels: Iterable[Channel],
    codec: Codec = REDIS,
) -> Tally:
    """Hand one read to the channels that watch its streams; advance the positions.

    Entries at or before a stream's position are skipped (a reply that raced a
    stream's restart), so nothing is sent twice; streams nobody watches are ignored.
    """
    channels = tuple(channels)
    touched: set[Channel] = set()
    read = 0
    first_ms = -1
    for stream, entries in batches:
        pos = positions.get(stream)
        if pos is None:
            continue
        new = Read(stream, codec)
        for e in entries:
            if codec.after(pos, e.key):
                pos = codec.advance(pos, e.key)
                new.add(e, pos)
        if not new.entries:
            continue
        read += len(new.entries)
        if first_ms < 0:
            first_ms = new.entries[0].ms
        for channel in channels:
            if stream in channel.shape.streams and channel.collect(stream, new):
                touched.add(channel)
        positions[stream] = pos
    deliveries = sent_bytes = 0
    for channel in touched:
        sent_bytes += channel.flush()
        deliveries += len(channel.subscribers)
    return Tally(read, deliveries, sent_bytes, max(first_ms, 0))
