"""Which routes stay atomic on a Redis Cluster (``synapse check --cluster``). Pure.

A route's copies are committed in the same atomic Lua script as the ack only
when every destination shares the source's hash slot (``clustercommit.py``);
otherwise they are written, then acknowledged: at-least-once. This judges each
route, and each source's dead letters, from the table alone: no server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from synapse.config import Route, RoutingTable
from synapse.slots import pattern_slot, slot_of


@dataclass(frozen=True, slots=True)
class Atomicity:
    """Whether the writes of a route (or the dead letters of a source) share their source's slot."""

    kind: str  # "route" or "dead_letter"
    name: str
    atomic: bool
    detail: str


def atomicity(table: RoutingTable) -> list[Atomicity]:
    """Per route and per source's dead letters: atomic (one slot) or at-least-once."""
    found: list[Atomicity] = []
    for route in table.routes:
        sources = [s for s in table.sources if route.source_glob is None or _may_match(route, s)]
        found.append(_judge("route", route.name, sources, route.to))
    for source in table.sources:
        found.append(_judge("dead_letter", source, [source], (table.settings.dead_letter,)))
    return found


def _may_match(route: Route, source: str) -> bool:
    """Whether a route's source glob can match a source name or pattern."""
    if route.matches_source is None or route.matches_source(source):
        return True
    if _literal_prefix(source) == source:
        return False
    # Two globs can share a name only if one's literal prefix starts the other's.
    mine, theirs = _literal_prefix(route.source_glob or ""), _literal_prefix(source)
    return mine.startswith(theirs) or theirs.startswith(mine)


def _literal_prefix(pattern: str) -> str:
    cut = min((i for i, c in enumerate(pattern) if c in "*?[\\"), default=len(pattern))
    return pattern[:cut]


def _judge(kind: str, name: str, sources: Sequence[str], dests: Sequence[str]) -> Atomicity:
    problems: list[str] = []
    for source in sources:
        home = pattern_slot(source)
        if home is None:
            problems.append(f"source {source!r} is a glob with no hash tag: slot unknown")
            continue
        apart = [d for d in dests if slot_of(d) != home]
        if apart:
            problems.append(
                f"{source!r} (slot {home}) -> "
                + ", ".join(f"{d!r} (slot {slot_of(d)})" for d in apart)
            )
    if problems:
        return Atomicity(kind, name, False, "at-least-once: " + "; ".join(problems))
    slots = sorted({pattern_slot(s) for s in sources} - {None})  # type: ignore[type-var]
    return Atomicity(kind, name, True, f"atomic: one slot ({', '.join(map(str, slots))})")
