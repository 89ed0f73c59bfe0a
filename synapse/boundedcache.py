"""A cache bounded in bytes, not entries: what per-type and per-stream decisions are kept in.

Keys come from producers (event types, source names), so their number and their
size are theirs to choose: 100k entries of 1 MiB types is 100 GB. This cache
counts what each key costs (``sys.getsizeof`` of its parts, plus the dict slot)
and evicts the oldest entries (first in, first out: a hit is one dict lookup,
nothing more on the hot path) until a new one fits. A key costing more than an
eighth of the budget is never kept: computing its value again is cheaper than
letting one event push everything else out.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: A dict slot, the tuple around a key's parts, and the value's reference: measured
#: on CPython 3.11 as ~100 bytes; rounded up.
ENTRY_OVERHEAD_BYTES = 128

#: What each of the router's caches may hold by default.
DEFAULT_MAX_BYTES = 4 << 20


def key_bytes(key: object) -> int:
    """What ``key`` costs in memory: a tuple's parts are counted one by one."""
    if isinstance(key, tuple):
        return sys.getsizeof(key) + sum(sys.getsizeof(part) for part in key)
    return sys.getsizeof(key)


class BoundedCache(Generic[K, V]):
    """A mapping that never holds more than ``max_bytes`` of keys (values are shared, small)."""

    __slots__ = ("_costs", "_data", "get", "max_bytes", "used_bytes")

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.used_bytes = 0
        self._data: dict[K, V] = {}
        self._costs: dict[K, int] = {}
        #: The value under a key, or None: the dict's own ``get`` (a hit costs one C call).
        self.get: Callable[[K], V | None] = self._data.get

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` under ``key``, evicting the oldest entries until it fits."""
        if key in self._data:
            self._data[key] = value
            return
        cost = key_bytes(key) + ENTRY_OVERHEAD_BYTES
        if cost > self.max_bytes // 8:
            return
        while self.used_bytes + cost > self.max_bytes:
            oldest = next(iter(self._data))
            del self._data[oldest]
            self.used_bytes -= self._costs.pop(oldest)
        self._data[key] = value
        self._costs[key] = cost
        self.used_bytes += cost

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data
