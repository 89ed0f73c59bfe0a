"""Redis Cluster hash slots: which slot a key, or every key a pattern can name, lives in.

Pure (the CRC16 of the cluster spec, hash tags ``{...}`` honoured; the same
function as ``redis.crc.key_slot``, pinned by ``tests/test_slots.py``); the slot I/O is in
``cluster.py``, the static analysis behind ``synapse check --cluster`` in
``slotcheck.py``.
"""

from __future__ import annotations

from binascii import crc_hqx
from collections.abc import Iterable

from synapse.boundedcache import BoundedCache

SLOTS = 16384

_slots: BoundedCache[str | bytes, int] = BoundedCache()  # names come from producers too


def slot_of(key: str | bytes) -> int:
    """The hash slot of ``key`` (hash tags ``{...}`` honoured), cached (bounded in bytes)."""
    found = _slots.get(key)
    if found is not None:
        return found
    slot = key_slot(key.encode() if isinstance(key, str) else key)
    _slots.put(key, slot)
    return slot


def key_slot(key: bytes) -> int:
    """The slot of ``key`` per the cluster spec: CRC16 (XMODEM) of its hash tag, or of it."""
    start = key.find(b"{")
    if start > -1:
        end = key.find(b"}", start + 1)
        if end > -1 and end != start + 1:
            key = key[start + 1 : end]
    return crc_hqx(key, 0) % SLOTS


def pattern_slot(pattern: str) -> int | None:
    """The slot of every key ``pattern`` can name, or None when a glob leaves it open."""
    if not any(c in pattern for c in "*?["):
        return slot_of(pattern)
    start = pattern.find("{")
    end = pattern.find("}", start + 1)
    if start < 0 or end <= start + 1 or any(c in pattern[: end + 1] for c in "*?[\\"):
        return None
    return slot_of(pattern[: end + 1])


def group_by_slot(streams: Iterable[str]) -> list[tuple[str, ...]]:
    """Streams grouped by hash slot, in first-seen order (one XREADGROUP each)."""
    groups: dict[int, list[str]] = {}
    for stream in streams:
        groups.setdefault(slot_of(stream), []).append(stream)
    return [tuple(g) for g in groups.values()]
