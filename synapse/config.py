"""routes.yaml -> a validated, immutable RoutingTable.

Loading is all-or-nothing: the YAML is read safely (``yamlfile``), checked
against the JSON Schema that ships in the package (``config.schema.json``),
then every glob, filter and schema is compiled. Any problem raises
``ConfigError`` listing each one with file and line. The result is never
mutated; a reload builds a new table and swaps the reference.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synapse import keys, loops
from synapse.boundedcache import BoundedCache
from synapse.errors import ConfigError, Problem
from synapse.matching import Filter, GlobTest, WhereError, compile_glob, compile_where
from synapse.retention import age_rules
from synapse.schemas import SchemaRegistry, load_registry
from synapse.shape import shape_problems, well_formed
from synapse.yamlfile import LineMap, line_of, read_yaml_raw

DEFAULT_CONFIG = Path("config/routes.yaml")


@dataclass(frozen=True, slots=True, kw_only=True)
class RouterSettings:
    """The ``router:`` section, with defaults for every key."""

    group: str = "synapse-router"
    consumer: str | None = None
    start: str = "earliest"
    batch: int = 500
    block_ms: int = 2000
    max_deliveries: int = 5
    claim_idle_ms: int = 30_000
    rescan_interval_ms: int = 5_000
    dead_letter: str = keys.DEFAULT_DEAD_LETTER
    unrouted: str = "dead-letter"
    type_field: str = "type"
    data_field: str = "data"
    provenance: bool = True
    require_schema: bool = False
    max_event_bytes: int = 1 << 20
    max_depth: int = 64
    max_fields: int = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """One compiled route."""

    name: str
    type_glob: str
    source_glob: str | None
    matches_type: GlobTest
    matches_source: GlobTest | None
    where: Filter | None
    to: tuple[str, ...]
    line: int | None
    spec: Mapping[str, Any]

    def matches(self, source: str, event_type: str) -> bool:
        """Whether type and source globs match (``where`` is checked apart)."""
        if not self.matches_type(event_type):
            return False
        return self.matches_source is None or self.matches_source(source)


@dataclass(frozen=True, slots=True)
class Decision:
    """What routing a (source, type) pair needs: fixed destinations, or filters to run."""

    routes: tuple[Route, ...]
    #: (destination, route name) pairs when no candidate route has a ``where``; else None.
    fixed: tuple[tuple[str, str], ...] | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingTable:
    """Everything the router needs to decide, compiled; immutable once built."""

    path: Path
    settings: RouterSettings
    sources: tuple[str, ...]
    routes: tuple[Route, ...]
    schemas: SchemaRegistry
    retention: tuple[tuple[str, GlobTest, int], ...]
    #: (glob, test, max_age_ms): retention by age, trimmed by a chore (synapse/retention.py)
    max_ages: tuple[tuple[str, GlobTest, int], ...] = ()
    hash: str
    spec: Mapping[str, Any]
    _decisions: BoundedCache[tuple[str, str], Decision] = field(
        default_factory=BoundedCache, compare=False
    )
    _maxlens: BoundedCache[str, tuple[int | None]] = field(
        default_factory=BoundedCache, compare=False
    )

    def decide(self, source: str, event_type: str) -> Decision:
        """The candidate routes for (source, type), cached: most events read no body."""
        key = (source, event_type)
        found = self._decisions.get(key)
        if found is not None:
            return found
        routes = tuple(r for r in self.routes if r.matches(source, event_type))
        fixed: tuple[tuple[str, str], ...] | None = None
        if all(r.where is None for r in routes):
            fixed = destinations_of(routes, None)
        decision = Decision(routes, fixed)
        self._decisions.put(key, decision)  # bounded in bytes: types come from producers
        return decision

    def maxlen_for(self, stream: str) -> int | None:
        """The retention cap of a destination (first matching glob), or None."""
        cached = self._maxlens.get(stream)
        if cached is not None:
            return cached[0]
        found = next((n for _, test, n in self.retention if test(stream)), None)
        self._maxlens.put(stream, (found,))
        return found

    def max_age_for(self, stream: str) -> int | None:
        """The age limit of a stream in ms (first matching ``max_age`` glob), or None."""
        return next((ms for _, test, ms in self.max_ages if test(stream)), None)

    @property
    def destinations(self) -> frozenset[str]:
        return frozenset(d for r in self.routes for d in r.to)

    @property
    def source_globs(self) -> tuple[GlobTest, ...]:
        return tuple(compile_glob(s) for s in self.sources)


def destinations_of(routes: tuple[Route, ...], body: Any) -> tuple[tuple[str, str], ...]:
    """Union of destinations of ``routes`` whose filter holds, each once, first route named."""
    seen: dict[str, str] = {}
    for route in routes:
        if route.where is not None and (body is None or not route.where.holds(body)):
            continue
        for dest in route.to:
            seen.setdefault(dest, route.name)
    return tuple(seen.items())


def load_table(path: Path | str = DEFAULT_CONFIG) -> RoutingTable:
    """Read, check and compile routes.yaml and its schemas; raise ConfigError on any problem."""
    path = Path(path)
    data, lines, raw = read_yaml_raw(path)
    return compile_table(data, lines, path, raw)


def compile_table(data: Any, lines: LineMap, path: Path, raw: bytes) -> RoutingTable:
    """Compile; every problem is reported in one ConfigError. Shape problems do not stop the
    rest: each well-formed part is still compiled and checked (a malformed one is skipped)."""
    name = str(path)
    problems, bad = shape_problems(data, lines, name)
    data = well_formed(data, bad, frozenset(RouterSettings.__dataclass_fields__))
    settings = RouterSettings(**data.get("router", {}))

    routes: list[Route] = []
    seen_names: set[str] = set()
    for i, spec in enumerate(data.get("routes") or []):
        if spec is None:  # malformed: its shape problems are reported
            continue
        at: tuple[str | int, ...] = ("routes", i)
        if spec["name"] in seen_names:
            problems.append(
                Problem(
                    name, line_of(lines, (*at, "name")), f"duplicate route name {spec['name']!r}"
                )
            )
        seen_names.add(spec["name"])
        match = spec["match"]
        type_glob = match if isinstance(match, str) else match.get("type", "*")
        source_glob = None if isinstance(match, str) else match.get("source")
        where = None
        if "where" in spec:
            try:
                where = compile_where(spec["where"], (*at, "where"))
            except WhereError as exc:
                problems.append(Problem(name, line_of(lines, exc.path), str(exc)))
        to = spec["to"] if isinstance(spec["to"], list) else [spec["to"]]
        for j, dest in enumerate(to):
            if dest == settings.dead_letter:
                problems.append(
                    Problem(
                        name,
                        line_of(lines, (*at, "to", j)),
                        f"route {spec['name']!r} writes to the dead-letter stream",
                    )
                )
        routes.append(
            Route(
                name=spec["name"],
                type_glob=type_glob,
                source_glob=source_glob,
                matches_type=compile_glob(type_glob),
                matches_source=compile_glob(source_glob) if source_glob else None,
                where=where,
                to=tuple(dict.fromkeys(to)),
                line=line_of(lines, at),
                spec=spec,
            )
        )

    problems.extend(
        loops.check(
            data, lines, name, loops.write_targets(data, settings.dead_letter, settings.unrouted)
        )
    )
    retention = tuple(
        (glob, compile_glob(glob), int(rule["maxlen"]))
        for glob, rule in (data.get("retention") or {}).items()
        if "maxlen" in rule
    )
    max_ages = tuple((g, compile_glob(g), ms) for g, ms in age_rules(data.get("retention")))
    mapping = data.get("schemas") or {}
    mapping_lines = {glob: line_of(lines, ("schemas", glob)) for glob in mapping}
    try:
        registry = load_registry(path.parent / "schemas", mapping, name, mapping_lines)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    digest = hashlib.sha256(raw + b"\0" + registry.digest.encode()).hexdigest()[:12]
    return RoutingTable(
        path=path,
        settings=settings,
        sources=tuple(data["sources"]),
        routes=tuple(routes),
        schemas=registry,
        retention=retention,
        max_ages=max_ages,
        hash=digest,
        spec=data,
    )


def diff(old: RoutingTable, new: RoutingTable) -> dict[str, list[str]]:
    """What a reload changes: routes added, removed, changed; sources added, removed."""
    old_routes = {r.name: r.spec for r in old.routes}
    new_routes = {r.name: r.spec for r in new.routes}
    return {
        "routes_added": sorted(new_routes.keys() - old_routes.keys()),
        "routes_removed": sorted(old_routes.keys() - new_routes.keys()),
        "routes_changed": sorted(
            n for n in new_routes.keys() & old_routes.keys() if new_routes[n] != old_routes[n]
        ),
        "sources_added": sorted(set(new.sources) - set(old.sources)),
        "sources_removed": sorted(set(old.sources) - set(new.sources)),
    }
