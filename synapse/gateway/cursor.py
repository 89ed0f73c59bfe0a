"""The SSE cursor: where a subscription stands on each of its streams.

A cursor is ``<stream>/<entry-id>`` for a one-stream subscription and those
pairs joined by ``,`` for several, in the order the request named the streams.
It is what a browser sends back as ``Last-Event-ID`` to resume right after it.
Stream names are written as they are, except ``%``, ``,`` and the characters
SSE cannot carry in a field (CR, LF, NUL), which are percent-escaped; entry ids
never hold ``/``, so a pair splits at its last ``/``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from urllib.parse import unquote

from synapse.errors import UsageError

_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")
_ESCAPES = {"%": "%25", ",": "%2C", "\r": "%0D", "\n": "%0A", "\0": "%00"}
_NEEDS_ESCAPE = re.compile("[%,\r\n\0]")

#: The largest cursor accepted (a few hundred streams' worth).
MAX_CURSOR_CHARS = 16_384

#: An entry id as a sortable pair (milliseconds, sequence).
IdKey = tuple[int, int]

ZERO: IdKey = (0, 0)


class BadCursor(UsageError):
    """A ``Last-Event-ID`` that this gateway did not write (answered 400)."""


def id_key(entry_id: str) -> IdKey:
    """``"1714564800000-3"`` as (1714564800000, 3); BadCursor when it is not an entry id."""
    found = _ID.match(entry_id)
    if not found:
        raise BadCursor(f"not a stream entry id: {entry_id!r}")
    return int(found.group(1)), int(found.group(2))


def id_text(key: IdKey) -> str:
    return f"{key[0]}-{key[1]}"


def escape(stream: str) -> str:
    if not _NEEDS_ESCAPE.search(stream):
        return stream
    return "".join(_ESCAPES.get(ch, ch) for ch in stream)


def format_cursor(streams: Sequence[str], positions: Mapping[str, IdKey]) -> str:
    """The cursor of ``streams`` (in that order) at ``positions``."""
    return ",".join(f"{escape(s)}/{id_text(positions[s])}" for s in streams)


def parse_cursor(text: str, streams: Sequence[str]) -> dict[str, IdKey]:
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
    found: dict[str, IdKey] = {}
    for pair in text.split(","):
        name, slash, entry_id = pair.rpartition("/")
        if not slash or not name:
            raise BadCursor(f"cursor pair {pair!r} is not <stream>/<entry-id>")
        stream = unquote(name)
        key = id_key(entry_id)
        if stream in wanted:
            found[stream] = key
    return found
