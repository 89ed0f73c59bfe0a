"""Times and stream entry ids as commands take them (``--since -2h``) and show them."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from synapse.errors import UsageError

_RELATIVE = re.compile(r"^-?(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_ID = re.compile(r"^\d+(-\d+)?$")


def parse_when(value: str, now_ms: int | None = None) -> str:
    """A stream id bound from ``-2h`` / ``30m`` (ago), ISO 8601, an entry id, or ms."""
    value = value.strip()
    if _ID.match(value):
        return value
    return str(parse_time_ms(value, now_ms))


def parse_time_ms(value: str, now_ms: int | None = None) -> int:
    """Milliseconds since the epoch from ``-2h`` / ``30m`` (ago) or ISO 8601 (UTC unless the
    time says otherwise); a usage error naming the accepted forms otherwise."""
    value = value.strip()
    rel = _RELATIVE.match(value)
    if rel:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return max(0, now - int(float(rel.group(1)) * _UNITS_MS[rel.group(2)]))
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"cannot read time {value!r}: use ISO 8601 (2024-05-01T12:00:00Z), "
            "relative (-2h, -30m, -7d) or an entry id (1714564800000-0)"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return int(stamp.timestamp() * 1000)


def entry_id(value: str) -> str:
    """``value`` when it is a stream entry id (``ms`` or ``ms-seq``), else a usage error."""
    if not _ID.match(value.strip()):
        raise UsageError(
            f"not an entry id: {value!r} (expected milliseconds-sequence, e.g. 1714564800000-0)"
        )
    return value.strip()


def ms_time(ms: int) -> str:
    """The ISO time (UTC, milliseconds) of ``ms`` since the epoch."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def id_time(entry_id: bytes | str | None) -> str:
    """The ISO time of an entry id, or '' for none."""
    if not entry_id:
        return ""
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return ms_time(int(raw.split("-", 1)[0]))


def id_key(entry_id: bytes | str) -> tuple[int, int]:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = raw.partition("-")
    return int(ms), int(seq or 0)


def next_id(entry_id: bytes | str) -> str:
    """The smallest id after ``entry_id`` (for exclusive ranges)."""
    ms, seq = id_key(entry_id)
    return f"{ms}-{seq + 1}"
