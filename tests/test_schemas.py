"""The schema registry: jsonschema-rs (hot path) and python-jsonschema agree on every verdict."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from synapse.config import load_table
from synapse.routing import Routing
from synapse.schemas import CompiledSchema, json_line
from tests.conftest import ROOT

#: A valid event per shipped schema file; the corpus is these plus mutations of them.
VALID: dict[str, dict[str, Any]] = {
    "model-events/model-event.json": {
        "type": "model.ready",
        "model_id": "m1",
        "version": "1.0.0",
        "framework": "pytorch",
        "artifact_uri": "s3://bucket/m1",
        "stage": "production",
        "metrics": {"accuracy": 0.97, "loss": 0.1, "custom": 3},
        "input_schema": {},
        "output_schema": {},
        "tags": ["a", "b"],
        "created_at": "2024-01-01T00:00:00Z",
        "reason": "r",
        "replacement": "m2",
    },
    "model-events/model-ready.json": {
        "model_id": "m1",
        "version": "1.0.0",
        "artifact_uri": "file:///srv/models/m1.onnx",
        "framework": "onnx",
        "format": "onnx",
        "stage": "production",
    },
    "inference-events/inference-event.json": {
        "type": "inference.completed",
        "request_id": "r1",
        "model_id": "m1",
        "model_version": "1",
        "latency_ms": 12.5,
        "inputs": [1, 2],
        "outputs": {"label": "cat"},
        "status": "ok",
        "error": "",
        "tokens": 10,
        "timestamp": "t",
    },
    "training-events/training-event.json": {
        "type": "training.progress",
        "run_id": "r1",
        "model_id": "m1",
        "epoch": 1,
        "step": 100,
        "progress": 0.5,
        "metrics": {"loss": 0.3},
        "artifact_uri": "s3://x",
        "duration_s": 3.5,
    },
    "platform-events/platform-event.json": {
        "type": "platform.deployed",
        "service": "api",
        "instance": "i-1",
        "message": "ok",
        "severity": "info",
    },
    "agi-decisions/agi-decision.json": {
        "type": "agi.decision",
        "decision_id": "d1",
        "agent": "a",
        "action": "scale",
        "confidence": 0.8,
        "rationale": "load",
        "inputs": [],
    },
    "error-events/error-event.json": {
        "type": "api.error",
        "service": "api",
        "message": "boom",
        "severity": "critical",
        "stack": "tb",
        "request_id": "r1",
    },
    "common/metrics.json": {"accuracy": 0.5, "precision": 1, "recall": 0, "f1": 0.3, "loss": 9},
}

#: Values every property is set to in turn: every JSON type and the usual edge values.
PROBES: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    1,
    -1,
    0.5,
    1.5,
    1e300,
    "",
    "x",
    "model.x",
    "s3://b/k",
    "no-scheme",
    "production",
    "critical",
    "ok",
    "ä" * 201,
    [],
    ["x"],
    [1],
    {},
    {"accuracy": 2},
    {"accuracy": 0.1},
    {"k": "v"},
)


def corpus(valid: dict[str, Any]) -> list[Any]:
    """The valid event, each key removed, each key set to each probe, and non-objects."""
    cases: list[Any] = [valid, {}, [], "x", 1, None]
    for key in valid:
        cases.append({k: v for k, v in valid.items() if k != key})
        for probe in PROBES:
            case = copy.deepcopy(valid)
            case[key] = probe
            cases.append(case)
    cases.append({**valid, "extra": {"deep": [1, {"x": None}]}})
    return cases


@pytest.fixture(scope="module")
def shipped() -> dict[str, CompiledSchema]:
    table = load_table(ROOT / "config" / "routes.yaml")
    return dict(table.schemas.files)


def test_every_shipped_schema_has_a_corpus(shipped: dict[str, CompiledSchema]) -> None:
    """The corpus covers every schema file that ships (a new file needs a valid example)."""
    assert sorted(shipped) == sorted(VALID)


@pytest.mark.parametrize("name", sorted(VALID))
def test_fast_and_full_validators_agree(shipped: dict[str, CompiledSchema], name: str) -> None:
    """jsonschema-rs and python-jsonschema give the same verdict on valid and invalid events."""
    schema = shipped[name]
    cases = corpus(VALID[name])
    verdicts = []
    for case in cases:
        fast = bool(schema.fast.is_valid(case))
        full = not list(schema.full.iter_errors(case))
        assert fast == full, (name, case)
        assert (schema.error(case) is None) == full
        verdicts.append(full)
    assert verdicts[0] is True  # the example is valid
    assert verdicts.count(False) >= 20  # and the corpus is not all valid
    assert len(cases) >= 50


def test_errors_are_located(shipped: dict[str, CompiledSchema]) -> None:
    """error() names the JSON path of the failing value, best error first."""
    schema = shipped["model-events/model-event.json"]
    body = {**VALID["model-events/model-event.json"], "metrics": {"accuracy": 3}}
    error = schema.error(body)
    assert error is not None and error.startswith("at /metrics/accuracy:")
    missing = schema.errors({"model_id": "m"})
    assert any("'version' is a required property" in e for e in missing)


def test_schema_for_first_matching_glob(shipped: dict[str, CompiledSchema]) -> None:
    """Event types map to schema files by the table's globs; unmapped types have none."""
    table = load_table(ROOT / "config" / "routes.yaml")
    found = table.schemas.schema_for("model.ready")
    assert found is not None and found.name == "model-events/model-ready.json"
    updated = table.schemas.schema_for("model.updated")
    assert updated is not None and updated.name == "model-events/model-event.json"
    error = table.schemas.schema_for("svc.error")
    assert error is not None and error.name == "error-events/error-event.json"
    assert table.schemas.schema_for("unmapped.kind") is None
    assert Routing(table).schema_for("unmapped.kind") is None  # cached miss stays a miss


@pytest.mark.parametrize(
    ("pointer", "line"),
    [((), 1), (("a",), 2), (("a", "b", 1), 4), (("a", "b", 2, "c"), 5), (("d",), 7), (("zz",), 1)],
)
def test_json_line(pointer: tuple[str | int, ...], line: int) -> None:
    """json_line finds the line of a JSON pointer (or of its nearest ancestor)."""
    raw = (
        b'{\n  "a": {"b": [\n    1,\n    "two, \\"}",\n'
        b'    {"c": null}]},\n  "x": [],\n  "d": true\n}'
    )
    assert json_line(raw, pointer) == line


def test_json_line_on_garbage_is_none_or_a_line() -> None:
    """json_line never raises, whatever the bytes."""
    assert json_line(b"{", ("a",)) in (None, 1)
    assert json_line(b"", ("a",)) is None
