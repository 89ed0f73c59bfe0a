"""The SSE cursor: where a subscription stands on each of its streams (pure).

A cursor is ``<name>/<a>-<b>`` pairs joined by ``,``, in the order the request
named the streams. It is what a browser sends back as ``Last-Event-ID`` to
resume right after it. What a pair means is the backend's (its ``Codec``):

- Redis: one pair per stream, ``<stream>/<entry-id>``: the last entry delivered.
- Kafka: one pair per partition, ``<topic>/<partition>-<offset>``: the offset the
  subscriber reads next on that partition (Kafka's committed-offset sense), for
  every partition of the topic; so a message of entry ``2-41`` carries
  ``<topic>/2-42``. A partition the cursor does not list (added since, or none
  known yet: ``<topic>/0-0``) is read from its first record.

Names are written as they are, except ``%``, ``,`` and the characters SSE cannot
carry in a field (CR, LF, NUL), which are percent-escaped; ids never hold ``/``,
so a pair splits at its last ``/``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Protocol
from urllib.parse import unquote

from synapse.errors import UsageError

_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")
_ESCAPES = {"%": "%25", ",": "%2C", "\r": "%0D", "\n": "%0A", "\0": "%00"}
_NEEDS_ESCAPE = re.compile("[%,\r\n\0]")

#: The largest cursor accepted: a thousand pairs or more (a Kafka cursor has one per
#: partition). The HTTP server takes header and request lines this long (``app.py``).
MAX_CURSOR_CHARS = 65_536

#: An entry id as a sortable pair: (milliseconds, sequence) on Redis, (partition, offset)
#: on Kafka.
IdKey = tuple[int, int]

#: Where the shared read stands on one stream: the last entry id read (Redis), or the
#: last offset read per partition, indexed by partition, -1 for none (Kafka).
Position = tuple[int, ...]

ZERO: IdKey = (0, 0)


class BadCursor(UsageError):
    """A ``Last-Event-ID`` that this gateway did not write (answered 400)."""


def id_key(entry_id: str) -> IdKey:
    """``"1714564800000-3"`` as (1714564800000, 3); BadCursor when it is not an entry id."""
    found = _ID.match(entry_id)
    if not found:
        raise BadCursor(f"not an entry id: {entry_id!r}")
    return int(found.group(1)), int(found.group(2))


def id_text(key: IdKey) -> str:
    return f"{key[0]}-{key[1]}"


def escape(stream: str) -> str:
    if not _NEEDS_ESCAPE.search(stream):
        return stream
    return "".join(_ESCAPES.get(ch, ch) for ch in stream)


class Codec(Protocol):
    """A backend's positions: how entries advance them and how a cursor writes them."""

    def after(self, pos: Position, key: IdKey) -> bool:
        """Whether the entry ``key`` lies past ``pos`` (not yet read)."""
        ...

    def advance(self, pos: Position, key: IdKey) -> Position:
        """``pos`` once the entry ``key`` is read."""
        ...

    def text(self, name: str, pos: Position) -> str:
        """The cursor pairs of one stream (``name`` already escaped)."""
        ...

    def value(self, keys: Sequence[IdKey]) -> Position:
        """The position a cursor's pairs for one stream stand for."""
        ...

    def start(self, cursor: Position, joined: Position) -> Position:
        """Where a resuming client's catch-up starts: its cursor, never past ``joined``."""
        ...

    def ahead(self, cursor: Position, pos: Position) -> bool:
        """Whether ``cursor`` is past the read position ``pos`` anywhere."""
        ...

    def restart(self, pos: Position, key: IdKey) -> Position:
        """``pos`` moved to just before ``key``, an entry the store numbered anew."""
        ...


class RedisCodec:
    """One pair per stream: the last entry id read."""

    def after(self, pos: Position, key: IdKey) -> bool:
        return key > pos

    def advance(self, pos: Position, key: IdKey) -> Position:
        return key

    def text(self, name: str, pos: Position) -> str:
        return f"{name}/{pos[0]}-{pos[1]}"

    def value(self, keys: Sequence[IdKey]) -> Position:
        return keys[-1]

    def start(self, cursor: Position, joined: Position) -> Position:
        return min(cursor, joined)

    def ahead(self, cursor: Position, pos: Position) -> bool:
        return cursor > pos

    def restart(self, pos: Position, key: IdKey) -> Position:
        return pos  # ids are times: a stream made again numbers past the old ones


#: Partition numbers a Kafka cursor may name (a bound on what one request allocates).
MAX_PARTITIONS = 100_000


class KafkaCodec:
    """One pair per partition, ``<partition>-<next offset>``; positions hold last offsets."""

    def after(self, pos: Position, key: IdKey) -> bool:
        p = key[0]
        return key[1] > (pos[p] if p < len(pos) else -1)

    def advance(self, pos: Position, key: IdKey) -> Position:
        p, offset = key
        if p < len(pos):
            return (*pos[:p], offset, *pos[p + 1 :])
        return (*pos, *(-1,) * (p - len(pos)), offset)

    def text(self, name: str, pos: Position) -> str:
        if not pos:
            return f"{name}/0-0"  # no partition known yet: every one from its first record
        return ",".join(f"{name}/{p}-{last + 1}" for p, last in enumerate(pos))

    def value(self, keys: Sequence[IdKey]) -> Position:
        size = max(p for p, _ in keys) + 1
        if size > MAX_PARTITIONS:
            raise BadCursor(f"partition {size - 1} is past {MAX_PARTITIONS - 1}")
        out = [-1] * size
        for p, next_offset in keys:
            out[p] = next_offset - 1
        return tuple(out)

    def start(self, cursor: Position, joined: Position) -> Position:
        return tuple(
            min(cursor[p] if p < len(cursor) else -1, last) for p, last in enumerate(joined)
        )

    def ahead(self, cursor: Position, pos: Position) -> bool:
        return any(c > p for c, p in zip(cursor, pos, strict=False))

    def restart(self, pos: Position, key: IdKey) -> Position:
        return self.advance(pos, (key[0], key[1] - 1))


REDIS = RedisCodec()
KAFKA = KafkaCodec()


def format_cursor(
    streams: Sequence[str], positions: Mapping[str, Position], codec: Codec = REDIS
) -> str:
    """The cursor of ``streams`` (in that order) at ``positions``."""
    return ",".join(codec.text(escape(s), positions[s]) for s in streams)


def parse_cursor(text: str, streams: Sequence[str], codec: Codec = REDIS) -> dict[str, Position]:
    """The positions a cursor holds for ``streams``.

    Streams the cursor does not name are absent from the result (they start
    live); a pair naming a stream outside ``streams`` is ignored, so a page that
    drops a stream from its query can still resume the others. A malformed
    cursor is a BadCursor.
    """
    text = text.strip()
    if not text:
        return {}
    if len(text) > MAX_CURSOR_CHARS:
        raise BadCursor(f"cursor longer than {MAX_CURSOR_CHARS} characters")
    wanted = set(streams)
    found: dict[str, list[IdKey]] = {}
    for pair in text.split(","):
        name, slash, entry_id = pair.rpartition("/")
        if not slash or not name:
            raise BadCursor(f"cursor pair {pair!r} is not <stream>/<id>")
        stream = unquote(name)
        key = id_key(entry_id)
        if stream in wanted:
            found.setdefault(stream, []).append(key)
    return {s: codec.value(keys) for s, keys in found.items()}
