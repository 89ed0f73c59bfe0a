"""Routing loops: no stream the router writes may be one it reads.

The router writes three kinds of stream: each route's ``to``, the ``unrouted``
stream (when ``router.unrouted`` names one) and the dead-letter stream. Any of
them that is a source, or that a source glob matches, would feed every copy back
in: one event becomes thousands within seconds. ``check`` refuses such a table
at load (file:line for each); ``sources.discover`` keeps the promise at every
glob rescan as a second line of defence.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from synapse.errors import Problem
from synapse.matching import compile_glob, is_glob
from synapse.yamlfile import LineMap, PathKey, line_of

#: ``router.unrouted`` values that name a policy, not a stream.
UNROUTED_POLICIES = frozenset({"dead-letter", "drop"})


@dataclass(frozen=True, slots=True)
class Target:
    """One stream the router writes, what writes it, and where the config says so."""

    stream: str
    what: str  # "route 'orders'", "router.unrouted", "router.dead_letter"
    at: PathKey


def write_targets(data: Mapping[str, Any], dead_letter: str, unrouted: str) -> list[Target]:
    """Every stream a table's router writes, with the config path that names it."""
    found: list[Target] = []
    for i, spec in enumerate(data.get("routes") or []):
        if spec is None:  # a malformed route (shape.well_formed): its problems are reported
            continue
        to = spec["to"] if isinstance(spec["to"], list) else [spec["to"]]
        for j, dest in enumerate(to):
            at: PathKey = (
                ("routes", i, "to", j) if isinstance(spec["to"], list) else ("routes", i, "to")
            )
            found.append(Target(dest, f"route {spec['name']!r}", at))
    if unrouted not in UNROUTED_POLICIES:
        found.append(Target(unrouted, "router.unrouted", ("router", "unrouted")))
    at_dlq: PathKey = ("router", "dead_letter") if "dead_letter" in data.get("router", {}) else ()
    found.append(Target(dead_letter, "router.dead_letter", at_dlq))
    return found


def consumed_by(stream: str, sources: Iterable[str]) -> str | None:
    """The first source name or glob that would read ``stream``, or None."""
    for source in sources:
        if stream == source or (is_glob(source) and compile_glob(source)(stream)):
            return source
    return None


def check(
    data: Mapping[str, Any], lines: LineMap, name: str, targets: list[Target]
) -> list[Problem]:
    """One problem per written stream that a source (name or glob) would read again."""
    problems: list[Problem] = []
    sources = list(data["sources"])
    for target in targets:
        source = consumed_by(target.stream, sources)
        if source is None:
            continue
        at = line_of(lines, ("sources", sources.index(source)))
        if target.what == "router.dead_letter":
            what = (
                f"source {source!r} is the dead-letter stream"
                if source == target.stream
                else f"source glob {source!r} matches the dead-letter stream {target.stream!r}"
            )
            problems.append(Problem(name, at, f"{what}: dead letters would be routed again"))
            continue
        what = (
            f"{target.what} writes to source {source!r}"
            if source == target.stream
            else f"{target.what} writes to {target.stream!r}, which source glob {source!r} matches"
        )
        problems.append(
            Problem(
                name,
                line_of(lines, target.at),
                f"{what}: every copy would be routed again (a loop)",
            )
        )
    return problems
