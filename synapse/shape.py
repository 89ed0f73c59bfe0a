"""routes.yaml against the JSON Schema that ships in the package: every shape problem at once.

``shape_problems`` lists each problem with its line (unknown keys one by one, the telling
branch of a oneOf), and the config paths they are at; ``well_formed`` then drops the
malformed parts (a malformed route becomes None), so ``config.compile_table`` still compiles
and checks the rest and ``synapse check`` reports every problem in one run.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from synapse.errors import ConfigError, Problem
from synapse.yamlfile import LineMap, line_of


@cache
def config_schema() -> dict[str, Any]:
    """The JSON Schema that routes.yaml is checked against (ships in the package)."""
    text = (Path(__file__).parent / "config.schema.json").read_text("utf-8")
    result: dict[str, Any] = json.loads(text)
    return result


def shape_problems(
    data: Any, lines: LineMap, name: str
) -> tuple[list[Problem], set[tuple[Any, ...]]]:
    """Every shape problem, and the paths they are at (raises only when there is no mapping)."""
    if data is None:
        raise ConfigError.single(name, 1, "the file is empty: expected version, sources, routes")
    validator = jsonschema.Draft202012Validator(config_schema())
    problems = []
    bad: set[tuple[Any, ...]] = set()
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.path))):
        path = tuple(error.absolute_path)
        bad.add(path)
        message = error.message
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = set(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - allowed):
                problems.append(
                    Problem(name, line_of(lines, (*path, key)), f"unknown key {key!r}{_in(path)}")
                )
            continue
        if error.validator in ("oneOf", "anyOf") and error.context:
            # The branch that fails on more than the instance's type says what is wrong.
            best = min(error.context, key=lambda e: (e.validator == "type", len(e.path)))
            message = best.message
        where = "/".join(str(p) for p in path)
        problems.append(
            Problem(name, line_of(lines, path), f"{message} (at {where})" if where else message)
        )
    if problems and not isinstance(data, dict):
        raise ConfigError(problems)
    return problems, bad


def well_formed(
    data: dict[str, Any], bad: set[tuple[Any, ...]], router_fields: frozenset[str]
) -> dict[str, Any]:
    """``data`` without its malformed parts (a malformed route becomes None), so the
    well-formed rest can still be compiled and checked."""
    if not bad:
        return data

    def clean(*at: Any) -> bool:  # no problem at ``at`` or below it
        return not any(p[: len(at)] == at for p in bad)

    def items(key: str) -> dict[str, Any]:
        found = data.get(key)
        return {k: v for k, v in found.items() if clean(key, k)} if isinstance(found, dict) else {}

    def listed(key: str) -> list[Any]:
        found = data.get(key)
        return found if isinstance(found, list) else []

    sources, routes = listed("sources"), listed("routes")
    return {
        **data,
        "router": {k: v for k, v in items("router").items() if k in router_fields},
        "sources": [s for i, s in enumerate(sources) if clean("sources", i)],
        "routes": [spec if clean("routes", i) else None for i, spec in enumerate(routes)],
        "schemas": items("schemas"),
        "retention": items("retention"),
    }


def _in(path: tuple[Any, ...]) -> str:
    return f" in {'/'.join(str(p) for p in path)}" if path else ""
