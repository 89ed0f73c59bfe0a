"""slots.py: the cluster spec's key slots, computed without redis-py (a pure module)."""

from __future__ import annotations

import random

from redis.crc import key_slot as redis_key_slot

from synapse.slots import group_by_slot, key_slot, pattern_slot, slot_of


def test_key_slot_agrees_with_redis_py_on_tags_and_edge_cases() -> None:
    """Same slot as redis-py's key_slot: plain keys, hash tags, empty and unclosed tags."""
    keys = [b"", b"a", b"{a}x", b"x{a}", b"{}a", b"{a", b"a}", b"{{a}}", b"{a}{b}", b"\xff\x00"]
    rng = random.Random(3)
    keys += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) for _ in range(500)]
    for key in keys:
        assert key_slot(key) == redis_key_slot(key), key


def test_slot_of_takes_str_and_bytes_alike() -> None:
    """A name as str or bytes has one slot; a hash tag pins unrelated names together."""
    assert slot_of("orders") == slot_of(b"orders") == redis_key_slot(b"orders")
    assert slot_of("{o}:in") == slot_of("{o}:billing")


def test_pattern_slot_and_groups() -> None:
    """A glob has a slot only when its hash tag is literal; streams group by slot in order."""
    assert pattern_slot("{o}:*") == slot_of("{o}")
    assert pattern_slot("o:*") is None
    assert pattern_slot("{o*}:x") is None
    assert group_by_slot(["{a}1", "b", "{a}2"]) == [("{a}1", "{a}2"), ("b",)]
