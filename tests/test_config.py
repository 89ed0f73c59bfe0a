"""routes.yaml and schema files: every refusal names file and line; valid tables load."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from synapse import yamlfile
from synapse.config import LINGER_MS, RoutingTable, diff, load_table
from synapse.errors import ConfigError, Problem
from synapse.plan import ROUTED, Planner
from synapse.routing import Routing
from tests.conftest import ROOT, write_table

BASE = """\
version: 1
sources: [ingress]
schemas:
  "model.*": model.json
routes:
  - name: models
    match: "model.*"
    to: [model-events]
"""
MODEL = {"type": "object", "required": ["model_id"], "properties": {"model_id": {"type": "string"}}}


def problems(folder: Path, text: str, schemas: dict[str, Any] | None = None) -> list[Problem]:
    path = write_table(folder, text, {"model.json": MODEL} if schemas is None else schemas)
    with pytest.raises(ConfigError) as caught:
        load_table(path)
    assert caught.value.problems
    return caught.value.problems


def only(folder: Path, text: str, schemas: dict[str, Any] | None = None) -> Problem:
    [problem] = problems(folder, text, schemas)
    return problem


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line of ``text`` containing ``needle``."""
    for number, line in enumerate(textwrap.dedent(text).splitlines(), 1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in text")


@pytest.mark.parametrize(
    ("text", "needle", "message"),
    [
        (BASE + "extra: 1\n", "extra:", "unknown key 'extra'"),
        (BASE.replace("version: 1\n", "version: 1\nrouter:\n  batchh: 5\n"), "batchh", "'batchh'"),
        (BASE + "    tos: [x]\n", "tos:", "unknown key 'tos' in routes/0"),
        (BASE.replace("version: 1\n", "version: 1\nrouter:\n  batch: many\n"), "batch:", "'many'"),
        (BASE.replace("version: 1\n", "version: 1\nrouter:\n  batch: 0\n"), "batch:", "minimum"),
        (BASE.replace("version: 1\n", "version: 1\nrouter:\n  start: now\n"), "start:", "'now'"),
        (BASE.replace("version: 1\n", "version: 1\nrouter:\n  linger_ms: -1\n"), "linger", "min"),
        (BASE.replace("version: 1\n", "version: 1\nrouter:\n  linger_ms: 9999\n"), "linger", "max"),
        (BASE.replace("version: 1\n", "version: 1\nrouter:\n  provenance: 1\n"), "prov", "bool"),
        (BASE.replace("version: 1", "version: 2"), "version:", "1 was expected"),
        (BASE.replace("    to: [model-events]\n", ""), "- name: models", "'to' is a required"),
        (BASE.replace("sources: [ingress]\n", ""), "version", "'sources' is a required"),
        (BASE.replace("sources: [ingress]", "sources: []"), "sources:", "should be non-empty"),
        (BASE.replace("sources: [ingress]", "sources: ingress"), "sources:", "not of type"),
        (BASE.replace("name: models", "name: 'bad name'"), "name:", "does not match"),
        (BASE.replace('match: "model.*"', "match: {typo: x}"), "match:", "'typo' was unexpected"),
        (BASE.replace('match: "model.*"', "match: 5"), "match:", "not of type"),
        (BASE + "retention:\n  x: {maxlen: -1}\n", "x: {maxlen", "minimum"),
        (BASE + "    where:\n      a: {like: 1}\n", "a: {like", "unknown key 'like'"),
        (BASE + "    where:\n      a: {in: x}\n", "a: {in", "not of type 'array'"),
        (BASE + "    where:\n      a: {regex: '('}\n", "a: {regex", "bad regex '('"),
        (BASE + "    where:\n      any: []\n", "any:", "should be non-empty"),
        (BASE + "  - name: models\n    match: x\n    to: y\n", "- name: models\n    match: x", ""),
        (BASE.replace("[model-events]", "[synapse:dlq]"), "to:", "dead-letter stream"),
        (BASE.replace("[model-events]", "[ingress]"), "to:", "writes to source 'ingress'"),
        (BASE.replace("[ingress]", "[ingress, synapse:dlq]"), "sources:", "is the dead-letter"),
    ],
)
def test_shape_errors_name_file_and_line(
    tmp_path: Path, text: str, needle: str, message: str
) -> None:
    """Unknown keys, wrong types, missing keys, bad filters: refused at file:line."""
    problem = only(tmp_path / "cfg", text)
    assert problem.file == str(tmp_path / "cfg" / "routes.yaml")
    expected_line = line_of(text, needle.split("\n")[0])
    if needle.startswith("- name: models\n"):  # the duplicate: the second route's name
        expected_line = len(BASE.splitlines()) + 1
        message = "duplicate route name 'models'"
    assert problem.line == expected_line, problem
    assert message in problem.message, problem
    assert str(problem).startswith(f"{problem.file}:{problem.line}: ")


def test_several_problems_reported_together(tmp_path: Path) -> None:
    """Every shape problem is reported, not only the first."""
    text = BASE + "extra: 1\nmore: 2\nretention:\n  x: {max: 5}\n"
    got = problems(tmp_path / "cfg", text)
    assert [(p.line, p.message) for p in got] == [
        (9, "unknown key 'extra'"),
        (10, "unknown key 'more'"),
        (12, "unknown key 'max' in retention/x"),
        (12, "'maxlen' is a required property (at retention/x)"),
    ]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("version: 1\nsources: [ingress\nroutes: []\n", 3, "invalid YAML"),
        ("version: 1\nsources: x\n  bad: indent\n", 3, "invalid YAML"),
        ("version: 1\nsources: [a]\nroutes: []\nversion: 1\n", 4, "duplicate key 'version'"),
        ("version: 1\nsources: &s [a]\nroutes: []\n", 2, "anchors and aliases"),
        ("a: &x [1]\nb: *x\n", 1, "anchors and aliases"),
        ("version: 1\nsources: [a]\nroutes: []\nx: !!python/object:os.system {}\n", 4, ""),
        ("version: 1\n1: x\n", 2, "keys must be strings"),
        ("version: 1\n<<: {sources: [a]}\n", 2, "merge keys"),
    ],
)
def test_yaml_errors_name_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    """Invalid syntax, duplicate keys, anchors/aliases, unsafe tags: refused at file:line."""
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_table(path)
    [problem] = caught.value.problems
    assert (problem.file, problem.line) == (str(path), line), problem
    assert message in problem.message


def test_alias_bomb_refused_quickly(tmp_path: Path) -> None:
    """A billion-laughs document is refused at its first anchor, not expanded."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as caught:
        load_table(path)
    assert caught.value.problems[0].line == 1


def test_oversized_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file over the size limit is refused with the line where it passes the limit."""
    monkeypatch.setattr(yamlfile, "MAX_FILE_BYTES", 100)
    path = tmp_path / "routes.yaml"
    path.write_text("# padding line\n" * 20)  # 300 bytes; byte 100 is on line 7
    problem = only_problem(path)
    assert problem.line == 7
    assert "300 bytes; the limit is 100" in problem.message


def test_non_utf8_file(tmp_path: Path) -> None:
    """A file that is not UTF-8 is refused with the line of the first bad byte."""
    path = tmp_path / "routes.yaml"
    path.write_bytes(b"version: 1\nsources: [in\xffgress]\nroutes: []\n")
    problem = only_problem(path)
    assert problem.line == 2
    assert "not UTF-8" in problem.message and "0xff" in problem.message


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    """An empty file (or only comments) is refused at line 1, saying it is empty."""
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    problem = only_problem(path)
    assert (problem.line, problem.message.split(":")[0]) == (1, "the file is empty")


def test_unreadable_file(tmp_path: Path) -> None:
    """A missing config file is a ConfigError naming it."""
    problem = only_problem(tmp_path / "nope.yaml")
    assert problem.file == str(tmp_path / "nope.yaml")
    assert "cannot read" in problem.message


def only_problem(path: Path) -> Problem:
    with pytest.raises(ConfigError) as caught:
        load_table(path)
    [problem] = caught.value.problems
    return problem


def test_missing_schema_file(tmp_path: Path) -> None:
    """A schemas: entry naming a file that does not exist is refused at its line."""
    text = BASE.replace('"model.*": model.json', '"model.*": nope.json')
    problem = only(tmp_path / "cfg", text)
    assert problem.line == 4
    assert "'nope.json' not found" in problem.message


def test_missing_schema_folder(tmp_path: Path) -> None:
    """With no schemas/ folder at all, each mapping is refused at its line."""
    problem = only(tmp_path / "cfg", BASE, schemas={})
    assert problem.line == 4
    assert "no such folder" in problem.message


def test_invalid_schema_against_metaschema(tmp_path: Path) -> None:
    """A schema that breaks its metaschema is refused at the file and line of the bad value."""
    folder = tmp_path / "cfg"
    write_table(folder, BASE)
    (folder / "schemas").mkdir()
    text = '{\n  "type": "object",\n  "properties": {\n    "a": {"type": "strin"}\n  }\n}\n'
    (folder / "schemas" / "model.json").write_text(text)
    problem = only_problem(folder / "routes.yaml")
    assert problem.file == str(folder / "schemas" / "model.json")
    assert problem.line == 4
    assert "invalid schema at /properties/a/type" in problem.message


def test_invalid_json_schema_file(tmp_path: Path) -> None:
    """A schema file that is not JSON is refused at its file and line."""
    folder = tmp_path / "cfg"
    write_table(folder, BASE)
    (folder / "schemas").mkdir()
    (folder / "schemas" / "model.json").write_text('{\n  "type": "object",\n  oops\n}\n')
    problem = only_problem(folder / "routes.yaml")
    assert (problem.file, problem.line) == (str(folder / "schemas" / "model.json"), 3)
    assert "invalid JSON" in problem.message


def test_non_utf8_schema_file(tmp_path: Path) -> None:
    """A schema file that is not UTF-8 is refused at the line of the bad byte."""
    folder = tmp_path / "cfg"
    write_table(folder, BASE)
    (folder / "schemas").mkdir()
    (folder / "schemas" / "model.json").write_bytes(b'{\n  "title": "\xff"\n}\n')
    problem = only_problem(folder / "routes.yaml")
    assert (problem.file, problem.line) == (str(folder / "schemas" / "model.json"), 2)
    assert "not UTF-8" in problem.message


def test_schema_file_not_an_object(tmp_path: Path) -> None:
    """A schema file must hold a JSON object."""
    folder = tmp_path / "cfg"
    write_table(folder, BASE)
    (folder / "schemas").mkdir()
    (folder / "schemas" / "model.json").write_text("[1]")
    problem = only_problem(folder / "routes.yaml")
    assert (problem.line, problem.message) == (1, "a schema file must hold a JSON object")


def test_problems_from_table_and_schemas_together(tmp_path: Path) -> None:
    """Route problems and schema problems are all reported in one error."""
    text = BASE + "    where:\n      a: {regex: '['}\n"
    folder = tmp_path / "cfg"
    write_table(folder, text)
    (folder / "schemas").mkdir()
    (folder / "schemas" / "model.json").write_text('{"type": 5}')
    with pytest.raises(ConfigError) as caught:
        load_table(folder / "routes.yaml")
    files = sorted(p.file for p in caught.value.problems)
    assert files == [str(folder / "routes.yaml"), str(folder / "schemas" / "model.json")]


def test_ref_across_schema_files(tmp_path: Path) -> None:
    """$ref between files (relative path and $id) resolves, and both validators use it."""
    common = {"type": "object", "properties": {"accuracy": {"type": "number", "maximum": 1}}}
    by_id = {"$id": "https://example.test/tag.json", "type": "string", "pattern": "^[a-z]+$"}
    model = {
        "type": "object",
        "required": ["model_id"],
        "properties": {
            "model_id": {"type": "string"},
            "metrics": {"$ref": "../common/metrics.json"},
            "tag": {"$ref": "https://example.test/tag.json"},
        },
    }
    text = BASE.replace("model.json", "models/model.json")
    path = write_table(
        tmp_path / "cfg",
        text,
        {"models/model.json": model, "common/metrics.json": common, "tag.json": by_id},
    )
    table = load_table(path)
    schema = table.schemas.schema_for("model.ready")
    assert schema is not None and schema.name == "models/model.json"
    assert schema.error({"model_id": "m", "metrics": {"accuracy": 0.5}, "tag": "abc"}) is None
    bad_metric = schema.error({"model_id": "m", "metrics": {"accuracy": 2}})
    assert bad_metric is not None and "/metrics/accuracy" in bad_metric
    assert schema.error({"model_id": "m", "tag": "ABC"}) is not None
    assert table.schemas.schema_for("other.type") is None


def test_valid_table_loads(tmp_path: Path) -> None:
    """A full valid table compiles with its settings, routes, retention and schema globs."""
    text = """\
        version: 1
        router:
          group: g
          start: latest
          batch: 10
          linger_ms: 5
          max_deliveries: 2
          unrouted: drop
          type_field: kind
          data_field: payload
          provenance: false
          require_schema: true
        sources: [ingress, "ingress:*"]
        schemas:
          "model.*": model.json
        routes:
          - name: a
            description: all models
            match: {type: "model.*", source: "ingress:*"}
            where:
              stage: production
              any: [{n: {gt: 1}}, {n: {lt: -1}}]
              not: {flag: true}
            to: one
          - name: b
            match: "*"
            to: [one, two, one]
        retention:
          "t*": {maxlen: 10}
    """
    table = load_table(write_table(tmp_path / "cfg", text, {"model.json": MODEL}))
    s = table.settings
    assert (s.group, s.start, s.batch, s.max_deliveries, s.unrouted) == (
        "g",
        "latest",
        10,
        2,
        "drop",
    )
    assert (s.type_field, s.data_field, s.provenance, s.require_schema) == (
        "kind",
        "payload",
        False,
        True,
    )
    assert s.linger_ms == 5
    assert table.sources == ("ingress", "ingress:*")
    assert [r.name for r in table.routes] == ["a", "b"]
    assert table.routes[0].to == ("one",)
    assert table.routes[1].to == ("one", "two")  # a repeated destination once
    assert table.routes[0].source_glob == "ingress:*"
    assert table.routes[0].line == line_of(text, "- name: a")
    assert Routing(table).maxlen_for("two") == 10 and Routing(table).maxlen_for("one") is None
    assert table.destinations == frozenset({"one", "two"})
    assert len(table.hash) == 12


def test_linger_defaults_to_the_measured_value(tmp_path: Path) -> None:
    """Without ``router.linger_ms`` the router lingers LINGER_MS (1 ms, bench.linger's choice)."""
    table = load_table(write_table(tmp_path / "cfg", BASE, {"model.json": MODEL}))
    assert table.settings.linger_ms == LINGER_MS == 1


def test_shipped_table_loads_and_routes_the_readme_example() -> None:
    """config/routes.yaml loads and the README's model.ready goes to model and platform events."""
    table = load_table(ROOT / "config" / "routes.yaml")
    body = {
        "model_id": "m1",
        "version": "1.0.0",
        "artifact_uri": "file:///tmp/m1.onnx",
        "framework": "onnx",
        "stage": "production",
        "metrics": {"accuracy": 0.97},
    }
    fields = [b"type", b"model.ready", b"data", json.dumps(body).encode()]
    [planned] = Planner(table).plan_batch("ingress", [(b"1-1", fields)], 0).entries
    assert planned.outcome == ROUTED
    assert [d for d, _ in planned.routes] == ["model-events", "platform-events"]


def test_hash_changes_with_schema_file(tmp_path: Path) -> None:
    """The config hash covers schema files: editing one changes it; reloading same keeps it."""
    path = write_table(tmp_path / "cfg", BASE, {"model.json": MODEL})
    first = load_table(path)
    assert load_table(path).hash == first.hash
    schema_file = tmp_path / "cfg" / "schemas" / "model.json"
    schema_file.write_text(json.dumps({**MODEL, "required": []}))
    assert load_table(path).hash != first.hash
    schema_file.write_text(json.dumps(MODEL))
    assert load_table(path).hash == first.hash
    (tmp_path / "cfg" / "schemas" / "unused.json").write_text("{}")
    assert load_table(path).hash != first.hash  # any file in the folder counts


def test_hash_changes_with_routes_file(tmp_path: Path) -> None:
    """Editing routes.yaml (even a comment) changes the hash."""
    path = write_table(tmp_path / "cfg", BASE, {"model.json": MODEL})
    first = load_table(path).hash
    path.write_text(BASE + "# a comment\n")
    assert load_table(path).hash != first


def test_diff_between_tables(tmp_path: Path) -> None:
    """diff lists routes added, removed, changed and sources added, removed."""
    old = load_table(write_table(tmp_path / "a", BASE, {"model.json": MODEL}))
    text = (
        BASE.replace("[ingress]", "[ingress, more]").replace("[model-events]", "[x]")
        + "  - name: extra\n    match: y\n    to: z\n"
    )
    new: RoutingTable = load_table(write_table(tmp_path / "b", text, {"model.json": MODEL}))
    assert diff(old, new) == {
        "routes_added": ["extra"],
        "routes_removed": [],
        "routes_changed": ["models"],
        "sources_added": ["more"],
        "sources_removed": [],
    }
    assert diff(new, old)["routes_removed"] == ["extra"]
