"""routes.yaml -> a validated, immutable RoutingTable.

Loading is all-or-nothing: the YAML is read safely (``yamlfile``), checked
against the JSON Schema that ships in the package (``config.schema.json``),
then every glob, filter and schema is compiled. Any problem raises
``ConfigError`` listing each one with file and line. The result is never
mutated; a reload builds a new table and swaps the reference.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synapse import keys, loops
from synapse.errors import ConfigError, Problem
from synapse.kafka import names as kafka_names
from synapse.kafka.url import Kind
from synapse.matching import Filter, GlobTest, WhereError, compile_glob, compile_where
from synapse.schemas import SchemaRegistry, load_registry
from synapse.shape import shape_problems, well_formed
from synapse.yamlfile import LineMap, line_of, read_yaml_raw

DEFAULT_CONFIG = Path("config/routes.yaml")
_AGE = re.compile(r"^(\d+)(ms|s|m|h|d|w)$")
#: Default ``router.linger_ms``: chosen by ``python -m bench.linger`` (docs/performance.md).
LINGER_MS = 1
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


@dataclass(frozen=True, slots=True, kw_only=True)
class RouterSettings:
    """The ``router:`` section, with defaults for every key."""

    group: str = "synapse-router"
    consumer: str | None = None
    start: str = "earliest"
    batch: int = 500
    block_ms: int = 2000
    #: Wait after a read that was neither empty nor full (``reads.Reads``; 0: never).
    linger_ms: int = LINGER_MS
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


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingTable:
    """Everything the router needs to decide, compiled: plain data, immutable once built,
    with uncached lookups by glob (``maxlen_for``, ``max_age_for``). Routing an event on
    it, and the caches that make that fast, are ``routing.Routing``'s."""

    path: Path
    settings: RouterSettings
    sources: tuple[str, ...]
    routes: tuple[Route, ...]
    schemas: SchemaRegistry
    retention: tuple[tuple[str, GlobTest, int], ...]
    #: (glob, test, max_age_ms): retention by age, trimmed by a chore (synapse/retention.py)
    max_ages: tuple[tuple[str, GlobTest, int], ...] = ()
    #: {glob: line} of each retention rule, for warnings that name it (cli/lint.py)
    retention_lines: Mapping[str, int | None] = field(default_factory=dict)
    hash: str
    spec: Mapping[str, Any]

    def maxlen_for(self, stream: str) -> int | None:
        """The length cap of a stream (first matching ``maxlen`` glob), or None (uncached:
        the router's cache is ``routing.Routing.maxlen_for``)."""
        return next((n for _, test, n in self.retention if test(stream)), None)

    def max_age_for(self, stream: str) -> int | None:
        """The age limit of a stream in ms (first matching ``max_age`` glob), or None."""
        return next((ms for _, test, ms in self.max_ages if test(stream)), None)

    @property
    def destinations(self) -> frozenset[str]:
        return frozenset(d for r in self.routes for d in r.to)

    @property
    def source_globs(self) -> tuple[GlobTest, ...]:
        return tuple(compile_glob(s) for s in self.sources)


def load_table(path: Path | str = DEFAULT_CONFIG, *, kind: Kind = "redis") -> RoutingTable:
    """Read, check and compile routes.yaml and its schemas for a backend of ``kind``;
    raise ConfigError on any problem."""
    path = Path(path)
    data, lines, raw = read_yaml_raw(path)
    return compile_table(data, lines, path, raw, kind=kind)


def compile_table(
    data: Any, lines: LineMap, path: Path, raw: bytes, *, kind: Kind = "redis"
) -> RoutingTable:
    """Compile; every problem is reported in one ConfigError. Shape problems do not stop the
    rest: each well-formed part is still compiled and checked (a malformed one is skipped).
    On Kafka (``kind``), every topic name must be legal and the default dead-letter topic
    is ``synapse.dlq``."""
    name = str(path)
    problems, bad = shape_problems(data, lines, name)
    data = well_formed(data, bad, frozenset(RouterSettings.__dataclass_fields__))
    router = dict(data.get("router", {}))
    if kind == "kafka":
        router.setdefault("dead_letter", kafka_names.DEFAULT_DLQ)
    settings = RouterSettings(**router)

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

    targets = loops.write_targets(data, settings.dead_letter, settings.unrouted)
    problems.extend(loops.check(data, lines, name, targets))
    if kind == "kafka":
        problems.extend(kafka_names.table_problems(name, lines, data["sources"], targets))
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
        retention_lines={g: line_of(lines, ("retention", g)) for g in data.get("retention") or {}},
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


def parse_age_ms(text: str) -> int:
    """``7d`` -> milliseconds; ValueError on anything else (units ms, s, m, h, d, w)."""
    match = _AGE.match(text.strip())
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"max_age {text!r}: expected a positive number and a unit, e.g. 7d, 12h")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def age_rules(spec: Any) -> tuple[tuple[str, int], ...]:
    """(glob, max_age_ms) for each retention rule that has ``max_age`` (already validated)."""
    rules = spec if isinstance(spec, dict) else {}
    return tuple(
        (glob, parse_age_ms(rule["max_age"]))
        for glob, rule in rules.items()
        if isinstance(rule, dict) and isinstance(rule.get("max_age"), str)
    )
