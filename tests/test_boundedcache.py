"""The byte-bounded cache: a flood of distinct (large) keys never holds more than its budget."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from synapse.boundedcache import ENTRY_OVERHEAD_BYTES, BoundedCache, key_bytes
from synapse.config import RoutingTable, load_table
from synapse.routing import Routing
from tests.conftest import write_table
from tests.test_config import BASE, MODEL


def random_type(size: int, rng: random.Random) -> str:
    return rng.randbytes(size // 2).hex()


def test_flood_of_4kb_keys_stays_within_the_byte_budget() -> None:
    """12,000 distinct 4 KB keys: the cache holds at most max_bytes of them, newest kept."""
    cache: BoundedCache[str, int] = BoundedCache(max_bytes=1 << 20)
    rng = random.Random(7)
    keys = [random_type(4096, rng) for _ in range(12_000)]
    for i, key in enumerate(keys):
        cache.put(key, i)
        assert cache.used_bytes <= cache.max_bytes
    held = [k for k in keys if k in cache]
    assert sum(key_bytes(k) + ENTRY_OVERHEAD_BYTES for k in held) == cache.used_bytes
    assert 200 < len(cache) < 260  # 1 MiB / (4 KB + overhead)
    assert cache.get(keys[-1]) == len(keys) - 1 and cache.get(keys[0]) is None


def test_tuple_keys_count_every_part() -> None:
    """A (source, type) key costs the sizes of both strings and the tuple."""
    key = ("ingress", "t" * 10_000)
    assert key_bytes(key) == sys.getsizeof(key) + sys.getsizeof(key[0]) + sys.getsizeof(key[1])
    cache: BoundedCache[tuple[str, str], int] = BoundedCache(max_bytes=1 << 20)
    cache.put(key, 1)
    assert cache.used_bytes == key_bytes(key) + ENTRY_OVERHEAD_BYTES


def test_one_huge_key_is_never_kept() -> None:
    """A key above an eighth of the budget is not cached and evicts nothing."""
    cache: BoundedCache[str, int] = BoundedCache(max_bytes=64 << 10)
    cache.put("small", 1)
    cache.put("x" * (16 << 10), 2)
    assert "small" in cache and len(cache) == 1


def test_routing_caches_bounded_in_bytes_under_a_type_flood(tmp_path: Path) -> None:
    """Candidates and schemas over 12,000 distinct 4 KB types keep under their budgets."""
    table: RoutingTable = load_table(write_table(tmp_path, BASE, {"model.json": MODEL}))
    routing = Routing(table)
    rng = random.Random(3)
    for _ in range(12_000):
        event_type = "model." + random_type(4096, rng)
        assert routing.candidates("ingress", event_type).routes  # model.* matches
        assert routing.schema_for(event_type) is not None
    for cache in (routing._candidates, routing._schemas):
        assert cache.used_bytes <= cache.max_bytes
        assert len(cache) < 12_000 // 4
