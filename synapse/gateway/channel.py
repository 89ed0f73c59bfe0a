"""Fan-out without copies: channels of identical subscriptions, bounded subscribers.

Every client with the same (streams, type globs, named) sees the same bytes:
a ``Channel`` encodes each read once (the cursor in ``id:`` is the shared read
position, which all of its live clients have reached) and hands the same
``bytes`` object to each ``Subscriber``. A subscriber holds what its client has
not been sent yet, up to ``limit_bytes``; past that it is dropped (its client
reconnects with ``Last-Event-ID`` and catches up from Redis), so a client that
cannot keep up never slows the others and never grows the gateway's memory.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from synapse.gateway.cursor import IdKey, escape, id_text
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


class Subscriber:
    """One client's pending bytes, bounded; ``wake`` is set when there is something to do."""

    def __init__(self, shape: Shape, limit_bytes: int, on_drop: Callable[[str], None]) -> None:
        self.shape = shape
        self.limit_bytes = limit_bytes
        self.on_drop = on_drop
        self.chunks: list[bytes] = []
        self.pending_bytes = 0
        self.wake = asyncio.Event()
        self.dropped: str | None = None
        #: Set by the hub once the subscriber is registered: where it joined the channel.
        self.joined_at: dict[str, IdKey] = {}

    def push(self, chunk: bytes) -> None:
        if self.dropped is not None:
            return
        # A client is behind when bytes are still waiting and this would pass the limit
        # (one read larger than the limit alone is fine: it is shared, and being sent).
        if self.chunks and self.pending_bytes + len(chunk) > self.limit_bytes:
            self.drop(SLOW)
            return
        self.pending_bytes += len(chunk)
        self.chunks.append(chunk)
        self.wake.set()

    def take(self) -> bytes:
        """Everything pending, as one write; clears ``wake``."""
        self.wake.clear()
        if not self.chunks:
            return b""
        out = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks = []
        self.pending_bytes = 0
        return out

    def drop(self, reason: str) -> None:
        """Stop this subscriber: free its buffer and wake its sender to end the response."""
        if self.dropped is not None:
            return
        self.dropped = reason
        self.chunks = []
        self.pending_bytes = 0
        self.wake.set()
        self.on_drop(reason)


class Channel:
    """The subscribers of one ``Shape`` and the encoding they share."""

    def __init__(self, shape: Shape, positions: Mapping[str, IdKey]) -> None:
        self.shape = shape
        self.positions = positions  # the hub's read positions (shared, live)
        self.subscribers: set[Subscriber] = set()
        self._types: dict[str, bool] = {}
        self._out: list[bytes] = []
        self._names = {s: escape(s) for s in shape.streams}

    def wants(self, event_type: str) -> bool:
        found = self._types.get(event_type)
        if found is None:
            found = self.shape.matches(event_type)
            if len(self._types) >= TYPE_CACHE_MAX:
                self._types.clear()
            self._types[event_type] = found
        return found

    def cursor_with(self, stream: str, key: IdKey) -> str:
        """The cursor at the hub's positions, with ``stream`` at ``key``."""
        if len(self.shape.streams) == 1:
            return f"{self._names[stream]}/{id_text(key)}"
        return ",".join(
            f"{self._names[s]}/{id_text(key if s == stream else self.positions[s])}"
            for s in self.shape.streams
        )

    def collect(self, stream: str, entries: Sequence[Entry]) -> int:
        """Encode the entries this channel wants (read from ``stream``); how many."""
        kept = 0
        named = self.shape.named
        for e in entries:
            if self.wants(e.type):
                cursor = self.cursor_with(stream, e.key)
                self._out.append(message(cursor, e.type if named else None, e.payload))
                kept += 1
        return kept

    def flush(self) -> int:
        """Hand what was collected to every subscriber (one shared chunk); bytes sent."""
        if not self._out:
            return 0
        chunk = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out = []
        for sub in tuple(self.subscribers):
            sub.push(chunk)
        return len(chunk)

    def broadcast(self, chunk: bytes) -> None:
        for sub in tuple(self.subscribers):
            sub.push(chunk)
