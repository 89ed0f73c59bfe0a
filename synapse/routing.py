"""Which routes an event takes, and why the others do not: one decision, one code path.

The planner (the daemon), ``synapse route`` and ``synapse test`` all ask a
``Routing`` built on the table, so they cannot disagree:

- ``glob_miss`` is the only test of a route's ``match`` (type and source globs):
  it says why a route does not apply, or None. Routes it passes for a
  (source, type) pair are that pair's candidates, cached (most events read no
  body: when no candidate has a ``where``, the targets are fixed).
- ``takes`` is the only test of a route's ``where`` on a body.
- ``targets`` is the decision: (destination, first route naming it) pairs.
- ``explain`` runs the same two tests route by route and adds the words (the
  failing glob, or ``where``'s failing clause); whether a route matched is the
  decision's answer, never a second opinion.

The table (``config.RoutingTable``) is plain immutable data; the caches (the
candidates of a pair, a type's schema, a stream's retention) live here, one
``Routing`` per planner, bounded in bytes (``boundedcache``) because
types and stream names come from producers. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from synapse.boundedcache import BoundedCache
from synapse.config import Route, RoutingTable
from synapse.schemas import CompiledSchema

#: (destination, first route naming it) pairs, in route order, each destination once.
Targets = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Candidates:
    """The routes whose globs match one (source, type) pair, and the type's schema: what
    the planner looks up once per event (one cache hit)."""

    routes: tuple[Route, ...]
    #: Their targets when none of them has a ``where`` (no body needed); else None.
    fixed: Targets | None
    #: The schema events of the type must match (first glob), or None.
    schema: CompiledSchema | None = None

    def targets(self, body: Any) -> Targets:
        """Where an event of this pair with ``body`` goes: the decision the router commits."""
        return self.fixed if self.fixed is not None else targets_of(self.routes, body)


def glob_miss(route: Route, source: str, event_type: str) -> str | None:
    """Why ``route``'s ``match`` does not apply to (source, type); None when it does."""
    if not route.matches_type(event_type):
        return f"type {event_type!r} does not match {route.type_glob!r}"
    if route.matches_source is not None and not route.matches_source(source):
        return f"source {source!r} does not match {route.source_glob!r}"
    return None


def takes(route: Route, body: Any) -> bool:
    """Whether a candidate route takes ``body`` (its ``where`` holds, or it has none)."""
    return route.where is None or (body is not None and route.where.holds(body))


def targets_of(routes: Sequence[Route], body: Any) -> Targets:
    """The targets of the ``routes`` that take ``body``."""
    seen: dict[str, str] = {}
    for route in routes:
        if takes(route, body):
            for dest in route.to:
                seen.setdefault(dest, route.name)
    return tuple(seen.items())


class Routing:
    """Decides (and explains) on one table; owns the per-type and per-stream caches."""

    __slots__ = ("_candidates", "_maxlens", "_schemas", "table")

    def __init__(self, table: RoutingTable) -> None:
        self.table = table
        self._candidates: BoundedCache[tuple[str, str], Candidates] = BoundedCache()
        self._maxlens: BoundedCache[str, tuple[int | None]] = BoundedCache()
        self._schemas: BoundedCache[str, tuple[CompiledSchema | None]] = BoundedCache()

    def schema_for(self, event_type: str) -> CompiledSchema | None:
        """The schema an event of ``event_type`` must match (first glob), or None; cached."""
        cached = self._schemas.get(event_type)
        if cached is not None:
            return cached[0]
        found = self.table.schemas.schema_for(event_type)
        self._schemas.put(event_type, (found,))
        return found

    def candidates(self, source: str, event_type: str) -> Candidates:
        """The candidate routes of (source, type), cached."""
        key = (source, event_type)
        found = self._candidates.get(key)
        if found is not None:
            return found
        routes = tuple(r for r in self.table.routes if glob_miss(r, source, event_type) is None)
        fixed = targets_of(routes, None) if all(r.where is None for r in routes) else None
        found = Candidates(routes, fixed, self.schema_for(event_type))
        self._candidates.put(key, found)
        return found

    def targets(self, source: str, event_type: str, body: Any) -> Targets:
        """Where an event goes: the decision the router commits."""
        return self.candidates(source, event_type).targets(body)

    def explain(self, source: str, event_type: str, body: Any) -> list[dict[str, Any]]:
        """For each route: whether it takes the event (the decision's answer) and why not."""
        chosen = {id(r) for r in self.candidates(source, event_type).routes}
        out: list[dict[str, Any]] = []
        for route in self.table.routes:
            why: str | None = None
            if id(route) not in chosen:
                why = glob_miss(route, source, event_type)
            elif not takes(route, body):
                failing = route.where.why_not(body) if route.where is not None else None
                why = f"where: {failing or 'no body'}"
            out.append(
                {"route": route.name, "matched": why is None, "why_not": why, "to": list(route.to)}
            )
        return out

    def maxlen_for(self, stream: str) -> int | None:
        """The retention cap of a destination (first matching glob), or None; cached."""
        cached = self._maxlens.get(stream)
        if cached is not None:
            return cached[0]
        found = self.table.maxlen_for(stream)
        self._maxlens.put(stream, (found,))
        return found
