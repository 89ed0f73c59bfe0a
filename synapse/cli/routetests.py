"""``synapse test``: routing unit tests in YAML, run on the daemon's own pure core.

A test file holds ``cases:`` (or is a list of cases). Each case::

    - name: production models are announced platform-wide
      event:
        type: model.ready            # the type field (optional if the body has one)
        source: ingress              # optional: the table's first source
        body: {model_id: m1, ...}    # the JSON in the data field
        # raw: '{not json'           # or the data field's bytes as given
        # fields: {type: x, a: b}    # or the raw entry fields
      expect:
        destinations: [model-events, platform-events]   # exactly these (any order)
        # dead_letter: schema_violation                 # or this reason
        # dropped: true                                 # or dropped by the unrouted policy

Output is pytest-like: a dot per pass, F per failure, E per broken case, then each
failure with what was expected, what happened and why. Exit 1 on any failure.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import orjson

from synapse.cli import common
from synapse.cli.dryrun import Verdict, default_source, dry_run, event_fields
from synapse.config import RoutingTable
from synapse.errors import REASONS, ConfigError, SynapseError
from synapse.yamlfile import LineMap, line_of, read_yaml

DEFAULT_TESTS = "config/tests/*.yaml"
_EVENT_KEYS = {"type", "source", "body", "raw", "fields"}
_EXPECT_KEYS = {"destinations", "dead_letter", "dropped"}


@dataclass(frozen=True, slots=True)
class Case:
    file: str
    line: int | None
    name: str
    spec: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Result:
    case: Case
    status: str  # passed | failed | error
    detail: tuple[str, ...] = ()
    verdict: Verdict | None = None

    @property
    def where(self) -> str:
        at = f"{self.case.file}:{self.case.line}" if self.case.line else self.case.file
        return f"{at}::{self.case.name}"


class CaseError(SynapseError, ValueError):
    """A test case that cannot run (bad shape); reported as E."""


@click.command("test")
@common.config_option
@common.json_option
@common.debug_option
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("-q", "--quiet", is_flag=True, help="Only failures and the summary.")
def test_cmd(config_path: Path, as_json: bool, paths: tuple[Path, ...], quiet: bool) -> None:
    """Run routing unit tests (YAML; default config/tests/*.yaml); exit 1 on any failure.

    \b
    Examples:
      synapse test
      synapse test config/tests/models.yaml -q
    """
    started = time.perf_counter()
    table = common.table(config_path)
    files = expand(paths, config_path)
    results: list[Result] = []
    for file in files:
        cases, broken = load_cases(file)
        ran = broken + [run_case(table, case) for case in cases]
        results += sorted(ran, key=lambda r: r.case.line or 0)
        if not as_json and not quiet:
            marks = "".join(_MARK[r.status] for r in results if r.case.file == str(file))
            click.echo(f"{file} {marks}")
    failed = [r for r in results if r.status != "passed"]
    covered = {d[1] for r in results if r.verdict for d in r.verdict.destinations}
    uncovered = [r.name for r in table.routes if r.name not in covered]
    elapsed = time.perf_counter() - started
    if as_json:
        common.emit_json(
            {
                "ok": bool(results) and not failed,
                "passed": len(results) - len(failed),
                "failed": sum(r.status == "failed" for r in results),
                "errors": sum(r.status == "error" for r in results),
                "routes_not_covered": uncovered,
                "results": [
                    {"case": r.where, "status": r.status, "detail": list(r.detail)} for r in results
                ],
            }
        )
    else:
        _report(results, failed, uncovered, elapsed)
    sys.exit(common.EXIT_FAILED if failed or not results else common.EXIT_OK)


_MARK = {"passed": ".", "failed": "F", "error": "E"}


def _report(results: list[Result], failed: list[Result], uncovered: list[str], took: float) -> None:
    if failed:
        click.echo("=" * 30 + " FAILURES " + "=" * 30)
    for r in failed:
        click.echo(f"___ {r.where} ___")
        for line in r.detail:
            click.echo(f"  {line}")
    if uncovered:
        click.echo(f"routes no case reaches: {', '.join(uncovered)}")
    if not results:
        click.echo("no test cases found")
    parts = [f"{sum(r.status == 'failed' for r in results)} failed"] if failed else []
    errors = sum(r.status == "error" for r in results)
    parts.append(f"{len(results) - len(failed)} passed")
    if errors:
        parts.append(common.plural(errors, "error"))
    click.echo(f"{', '.join(parts)} in {took:.2f}s")


def expand(paths: tuple[Path, ...], config_path: Path) -> list[Path]:
    """Files to run: the paths given (folders -> their *.yaml), else tests/ beside the config."""
    if not paths:
        paths = (config_path.parent / "tests",)
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        elif path.exists():
            files.append(path)
        else:
            raise common.Failure(f"no such test file or folder: {path}")
    return files


def load_cases(path: Path) -> tuple[list[Case], list[Result]]:
    """The cases of one file, and an error result for each that cannot run."""
    name = str(path)
    try:
        data, lines = read_yaml(path)
    except ConfigError as exc:
        case = Case(name, exc.problems[0].line, "(file)", {})
        return [], [Result(case, "error", tuple(str(p) for p in exc.problems))]
    at: tuple[str | int, ...] = ()
    if isinstance(data, dict) and set(data) <= {"cases", "config"}:
        data, at = data.get("cases"), ("cases",)
    if not isinstance(data, list):
        case = Case(name, 1, "(file)", {})
        return [], [Result(case, "error", ("expected a list of cases (or cases: [...])",))]
    cases: list[Case] = []
    broken: list[Result] = []
    for i, spec in enumerate(data):
        line = line_of(lines, (*at, i))
        label = spec.get("name") if isinstance(spec, dict) else None
        case = Case(
            name, line, str(label or f"case {i + 1}"), spec if isinstance(spec, dict) else {}
        )
        try:
            _check_case(spec, lines, (*at, i))
        except CaseError as exc:
            broken.append(Result(case, "error", (str(exc),)))
            continue
        cases.append(case)
    return cases, broken


def _check_case(spec: Any, lines: LineMap, at: tuple[str | int, ...]) -> None:
    if not isinstance(spec, dict) or not isinstance(spec.get("event"), dict):
        raise CaseError("a case needs an event: mapping")
    if not isinstance(spec.get("expect"), dict):
        raise CaseError("a case needs an expect: mapping")
    unknown = set(spec["event"]) - _EVENT_KEYS
    if unknown:
        raise CaseError(f"unknown event keys {sorted(unknown)}; use {sorted(_EVENT_KEYS)}")
    expect = spec["expect"]
    if len(set(expect) & _EXPECT_KEYS) != 1 or set(expect) - _EXPECT_KEYS:
        raise CaseError(f"expect takes exactly one of {sorted(_EXPECT_KEYS)}")
    if "dead_letter" in expect and expect["dead_letter"] not in REASONS:
        raise CaseError(f"unknown dead-letter reason {expect['dead_letter']!r}")
    if "destinations" in expect and not isinstance(expect["destinations"], list):
        raise CaseError("expect.destinations takes a list of stream names")


def case_fields(table: RoutingTable, event: dict[str, Any]) -> list[bytes]:
    if "fields" in event:
        out: list[bytes] = []
        for k, v in event["fields"].items():
            text = v if isinstance(v, str) else orjson.dumps(v).decode()
            out += (str(k).encode(), text.encode())
        return out
    raw = event["raw"].encode() if "raw" in event else None
    return event_fields(table, event_type=event.get("type"), body=event.get("body", {}), raw=raw)


def run_case(table: RoutingTable, case: Case) -> Result:
    event, expect = case.spec["event"], case.spec["expect"]
    verdict = dry_run(
        table, event.get("source") or default_source(table), case_fields(table, event)
    )
    got = _describe(verdict)
    if "destinations" in expect:
        want = sorted(str(d) for d in expect["destinations"])
        ok = verdict.outcome == "routed" and sorted(d for d, _ in verdict.destinations) == want
        wanted = f"routed to {want}"
    elif "dead_letter" in expect:
        ok = verdict.outcome == "dead_letter" and verdict.reason == expect["dead_letter"]
        wanted = f"dead letter {expect['dead_letter']}"
    else:
        ok = (verdict.outcome == "dropped") == bool(expect["dropped"])
        wanted = "dropped" if expect["dropped"] else "not dropped"
    if ok:
        return Result(case, "passed", verdict=verdict)
    detail = [f"expected: {wanted}", f"got:      {got}"]
    if "destinations" in expect and verdict.outcome == "routed":
        have = {d for d, _ in verdict.destinations}
        detail += [f"  - {d}   (expected, missing)" for d in want if d not in have]
        detail += [f"  + {d}   (not expected)" for d in sorted(have - set(want))]
    if verdict.error:
        detail.append(f"error:    {verdict.error}")
    detail += [f"schema:   {e}" for e in verdict.schema_errors]
    detail += [
        f"route {r['route']}: {r['why_not'] or 'matched'}"
        for r in verdict.routes
        if r["matched"] or (r["why_not"] and not r["why_not"].startswith("type "))
    ]
    return Result(case, "failed", tuple(detail), verdict)


def _describe(verdict: Verdict) -> str:
    if verdict.outcome == "routed":
        return f"routed to {sorted(d for d, _ in verdict.destinations)}"
    if verdict.outcome == "dropped":
        return "dropped"
    return f"dead letter {verdict.reason}"
