"""check, route and test: the commands that need no Redis."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from synapse.cli import main
from synapse.cli.lint import edit_distance, globs_overlap
from tests.cli.conftest import SHIPPED, Invoke, as_json
from tests.conftest import write_table

MODEL_BODY = {
    "model_id": "m1",
    "version": "1",
    "artifact_uri": "file:///tmp/m1.onnx",
    "framework": "onnx",
    "stage": "production",
    "metrics": {"accuracy": 0.95},
}


def test_globs_overlap_is_exact() -> None:
    """Two globs overlap exactly when some string matches both."""
    assert globs_overlap("model.*", "*.ready")
    assert globs_overlap("model.ready", "model.*")
    assert not globs_overlap("model.*", "inference.*")
    assert not globs_overlap("a?c", "a")
    assert globs_overlap("[ab]x", "bx")
    assert not globs_overlap("[ab]x", "[!ab]x")
    assert globs_overlap("ingress:*", "ingress:eu")
    assert edit_distance("model-events", "model-event") == 1


def test_check_shipped_config_is_clean(cli: Invoke) -> None:
    """The shipped table passes check --strict with no warnings."""
    result = cli("check", "--strict", "--json", "--config", str(SHIPPED))
    assert result.exit_code == 0
    data = as_json(result)
    assert data["ok"] is True and data["warnings"] == [] and data["problems"] == []
    assert data["routes"] == 9 and len(data["hash"]) == 12


def test_check_warns_about_dead_routes_and_typos(cli: Invoke, tmp_path: Path) -> None:
    """Unmatchable routes and typo destinations warn (exit 0), and fail with --strict."""
    path = write_table(
        tmp_path / "cfg",
        """
        version: 1
        router: {require_schema: true}
        sources: [ingress]
        schemas: {"model.*": m.json}
        routes:
          - {name: models, match: "model.*", to: [model-events]}
          - {name: also, match: "model.ready", to: [model-events]}
          - {name: typo, match: "model.updated", to: [model-event]}
          - {name: orphan, match: "billing.*", to: [billing]}
          - {name: elsewhere, match: {type: "model.*", source: "other:*"}, to: [model-events]}
        """,
        {"m.json": {"type": "object"}},
    )
    result = cli("check", "--config", str(path))
    assert result.exit_code == 0, result.output
    assert "route 'orphan' can never match: require_schema" in result.stderr
    assert "source 'other:*' matches no configured source" in result.stderr
    assert "'model-event' (route typo) looks like a typo of 'model-events'" in result.stderr
    strict = cli("check", "--strict", "--json", "--config", str(path))
    assert strict.exit_code == 1
    warnings = as_json(strict)["warnings"]
    assert len(warnings) == 3 and all(w["line"] for w in warnings)


def test_check_strict_suggests_known_names_for_typos(cli: Invoke, tmp_path: Path) -> None:
    """A destination close to a schema folder or source, used nowhere else, is a likely typo:
    "did you mean", and --strict exits 1."""
    path = write_table(
        tmp_path / "cfg",
        """
        version: 1
        sources: [ingress, billing-in]
        schemas: {"inference.*": inference-events/inference-event.json}
        routes:
          - {name: inference, match: "inference.*", to: [inference-event]}
          - {name: bills, match: "bill.*", to: [billing-ni]}
          - {name: fine, match: "ok.*", to: [audit-log]}
        """,
        {"inference-events/inference-event.json": {"type": "object"}},
    )
    result = cli("check", "--strict", "--config", str(path))
    assert result.exit_code == 1, result.output
    assert (
        "destination 'inference-event' (route inference) looks like a typo of "
        "'inference-events' (a schema folder): did you mean 'inference-events'?"
    ) in result.stderr
    assert "did you mean 'billing-in'?" in result.stderr
    assert "audit-log" not in result.stderr


def test_check_reports_every_problem_in_one_run(cli: Invoke, tmp_path: Path) -> None:
    """Shape problems (unknown keys, a missing field) do not hide the rest: a loop, a duplicate
    route name and a missing schema file are reported in the same run."""
    path = write_table(
        tmp_path / "cfg",
        """
        version: 1
        router: {dead_letter: dlq, batchh: 5}
        sources: [ingress]
        schemas: {"a.*": x/missing.json}
        routes:
          - {name: r1, match: "a.*", to: [ingress]}
          - {name: r1, match: "b.*", to: [out]}
          - {name: r3, match: "c.*", too: [out]}
          - {name: r4, match: "d.*", to: [dlq]}
        """,
    )
    result = cli("check", "--json", "--config", str(path))
    assert result.exit_code == 1
    messages = [p["message"] for p in as_json(result)["problems"]]
    expected = [
        "unknown key 'batchh' in router",
        "unknown key 'too' in routes/2",
        "route 'r1' writes to source 'ingress'",
        "duplicate route name 'r1'",
        "route 'r4' writes to the dead-letter stream",
        "schema file 'x/missing.json' not found",
    ]
    for text in expected:
        assert any(text in m for m in messages), (text, messages)


def test_check_reports_problems_with_lines(cli: Invoke, tmp_path: Path) -> None:
    """A broken table exits 1 with file:line problems, in text and JSON."""
    path = write_table(tmp_path / "cfg", "version: 1\nsources: [ingress]\nroutes: [{name: x}]\n")
    result = cli("check", "--config", str(path))
    assert result.exit_code == 1
    assert f"{path}:3:" in result.stderr
    data = as_json(cli("check", "--json", "--config", str(path)))
    assert data["ok"] is False and data["problems"][0]["line"] == 3


def test_route_explains_matches_and_misses(cli: Invoke, tmp_path: Path) -> None:
    """route names the matched routes, the failing where clause of the others, the destinations."""
    body = dict(MODEL_BODY, metrics={"accuracy": 0.5})
    event = tmp_path / "event.json"
    event.write_text(json.dumps(body))
    result = cli("route", str(event), "--type", "model.ready")
    assert result.exit_code == 0
    assert "+ models -> model-events" in result.stdout
    assert "production-models: where: metrics.accuracy gte 0.9 (got 0.5)" in result.stdout
    assert "routed to model-events (via models)" in result.stdout
    data = as_json(
        cli("route", "--json", "-", input=json.dumps({**MODEL_BODY, "type": "model.ready"}))
    )
    assert data["outcome"] == "routed"
    assert sorted(data["destinations"]) == ["model-events", "platform-events"]
    assert data["schema"] == {"file": "model-events/model-ready.json", "valid": True, "errors": []}
    assert {r["route"] for r in data["routes"] if r["matched"]} == {"models", "production-models"}


def test_route_lists_every_schema_error_and_exits_1(cli: Invoke) -> None:
    """An invalid event: exit 1, dead-letter reason, and ALL validation errors."""
    result = cli("route", "--json", "--type", "model.updated", "-", input='{"model_id": 5}')
    assert result.exit_code == 1
    data = as_json(result)
    assert data["outcome"] == "dead_letter" and data["dead_letter"] == "schema_violation"
    assert len(data["schema"]["errors"]) == 2
    assert data["destinations"] == []
    text = cli("route", "--type", "model.updated", "-", input='{"model_id": 5}')
    assert "INVALID (2 errors)" in text.stdout and "'version' is a required property" in text.stdout


def test_route_bad_json_and_unknown_type(cli: Invoke) -> None:
    """Non-JSON input is the invalid_json verdict; an unrouted type is no_route."""
    bad = as_json(cli("route", "--json", "--type", "model.ready", "-", input="{nope"))
    assert bad["dead_letter"] == "invalid_json"
    none = as_json(cli("route", "--json", "--type", "x.y", "-", input="{}"))
    assert none["dead_letter"] == "no_route"
    fields = cli(
        "route", "--fields", "--json", "-", input='{"type": "platform.up", "service": "a"}'
    )
    assert as_json(fields)["destinations"] == ["platform-events"]


def test_route_missing_file_is_usage_error(cli: Invoke) -> None:
    """A missing EVENT file exits 2 with one line, no traceback."""
    result = cli("route", "/nonexistent/event.json")
    assert result.exit_code == 2
    assert result.stderr.startswith("synapse: error: cannot read /nonexistent/event.json")
    assert "Traceback" not in result.output


def test_shipped_routing_tests_pass(cli: Invoke) -> None:
    """`synapse test` on config/tests passes and reaches every shipped route."""
    result = cli("test", "--json", "--config", str(SHIPPED))
    data = as_json(result)
    assert result.exit_code == 0, result.stdout
    assert data["ok"] and data["failed"] == 0 and data["passed"] >= 20
    assert data["routes_not_covered"] == []
    reasons = {r["case"] for r in data["results"]}
    assert len(reasons) == data["passed"]


def test_failing_case_shows_a_readable_diff(cli: Invoke, tmp_path: Path) -> None:
    """A wrong expectation fails (exit 1) with expected, got, the missing destination and why."""
    cases = tmp_path / "wrong.yaml"
    cases.write_text(
        """
cases:
  - name: low accuracy is not announced
    event:
      type: model.ready
      body: {model_id: m1, version: "1", artifact_uri: "file:///m1", framework: onnx,
             stage: production, metrics: {accuracy: 0.5}}
    expect:
      destinations: [model-events, platform-events]
  - name: broken case
    event: {type: x}
  - name: right
    event: {type: nope.nothing, body: {}}
    expect: {dead_letter: no_route}
"""
    )
    result = cli("test", str(cases))
    assert result.exit_code == 1
    out = result.stdout
    assert "wrong.yaml FE." in out
    assert "expected: routed to ['model-events', 'platform-events']" in out
    assert "got:      routed to ['model-events']" in out
    assert "  - platform-events   (expected, missing)" in out
    assert "route production-models: where: metrics.accuracy gte 0.9 (got 0.5)" in out
    assert "a case needs an expect: mapping" in out
    assert "1 failed, 1 passed, 1 error in" in out


def test_no_cases_is_a_failure(cli: Invoke, tmp_path: Path) -> None:
    """An empty test folder exits 1 (nothing was tested)."""
    (tmp_path / "empty").mkdir()
    result = cli("test", str(tmp_path / "empty"))
    assert result.exit_code == 1 and "no test cases found" in result.stdout


def all_commands() -> list[tuple[str, ...]]:
    """Every command path of the CLI: (), ("dlq",), ("dlq", "list"), ..."""
    found: list[tuple[str, ...]] = [()]

    def walk(group: click.Group, at: tuple[str, ...]) -> None:
        for name, command in group.commands.items():
            found.append((*at, name))
            if isinstance(command, click.Group):
                walk(command, (*at, name))

    walk(main, ())
    return found


@pytest.mark.parametrize("path", all_commands(), ids=" ".join)
def test_every_help_page_has_an_example(path: tuple[str, ...]) -> None:
    """Each command's --help ends with an Example(s) section showing a real invocation."""
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0
    assert re.search(r"^\s*Examples?:\n\s+.*\bsynapse ", result.output, re.M), result.output
