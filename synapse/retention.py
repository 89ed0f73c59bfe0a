"""Retention by age: ``retention: {"ingress": {max_age: 7d}}``, applied by a periodic chore.

Next to ``maxlen`` (approximate MAXLEN on every write), a rule may give ``max_age``: entries
older than that are trimmed with ``XTRIM stream MINID <now - max_age>``. Age is a property
of time, not of writes (a quiet stream must still age out), so it is a chore of the router
loop, not part of the commit: every ``interval_s`` (60 s) each stream the router knows that a
``max_age`` glob matches (its sources, its destinations, the dead-letter stream) is trimmed
exactly (no ``~``: an entry outlives ``max_age`` by at most one interval, never by a node).

A source is never trimmed past what its consumer group still owes: the cut is clamped to
the group's oldest pending entry and to the first entry not yet delivered, so age-based
retention never drops an event before it is routed.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.exceptions import ResponseError

from synapse import wire
from synapse.config import RoutingTable
from synapse.config import parse_age_ms as parse_age_ms  # pure: it lives with the loader


def _id_key(entry_id: bytes | str) -> tuple[int, int]:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = raw.partition("-")
    return int(ms), int(seq or 0)


async def _owed_from(client: wire.Client, stream: str, group: str) -> tuple[int, int] | None:
    """The first entry ``group`` still owes on ``stream`` (pending or undelivered), if any."""
    try:
        groups = await client.xinfo_groups(stream)
    except ResponseError:
        return None
    info = next((g for g in groups if g.get("name") in (group, group.encode())), None)
    if info is None:
        return None
    ms, seq = _id_key(info.get("last-delivered-id") or b"0-0")
    owed = (ms, seq + 1)
    if info.get("pending"):
        summary = await client.xpending(stream, group)
        if summary.get("min"):
            owed = min(owed, _id_key(summary["min"]))
    return owed


async def trim_by_age(
    client: wire.Client,
    table: RoutingTable,
    streams: Iterable[str],
    sources: Iterable[str],
    now_ms: int,
) -> dict[str, int]:
    """Trim each of ``streams`` with a ``max_age`` rule; {stream: entries removed}."""
    removed: dict[str, int] = {}
    consumed = set(sources)
    for stream in sorted(set(streams)):
        max_age_ms = table.max_age_for(stream)
        if max_age_ms is None:
            continue
        cut = (max(0, now_ms - max_age_ms), 0)
        if stream in consumed:
            owed = await _owed_from(client, stream, table.settings.group)
            if owed is not None:
                cut = min(cut, owed)
        try:
            n = await client.execute_command("XTRIM", stream, "MINID", f"{cut[0]}-{cut[1]}")
        except ResponseError:  # not a stream (any more)
            continue
        if n:
            removed[stream] = int(n)
    return removed
