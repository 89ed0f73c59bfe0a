"""Hostile schema files and patterns: linear-time regexes, dangling $ref, oversized files."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from synapse.config import RoutingTable, load_table
from synapse.errors import ConfigError
from synapse.matching import compile_where
from synapse.routercli import EXIT_CONFIG
from synapse.schemas import MAX_SCHEMA_BYTES
from tests.conftest import ROOT, running, wait_for, write_table

TABLE = """\
version: 1
router: {block_ms: 100}
sources: [ingress]
schemas:
  "ev.*": ev.json
routes:
  - name: all
    match: "ev.*"
    to: [out]
"""
EVIL = "^(a+)+$"
SUBJECT = "a" * 30 + "!"  # python's re: minutes of backtracking


def evil_schema() -> dict[str, object]:
    return {
        "type": "object",
        "properties": {"name": {"type": "string", "pattern": EVIL}},
        "patternProperties": {EVIL: {"type": "integer"}},
        "additionalProperties": False,
    }


def test_catastrophic_pattern_errors_are_built_in_linear_time(tmp_path: Path) -> None:
    """A schema pattern like ^(a+)+$ on 30 a's and '!' gives the readable error at once."""
    table = load_table(write_table(tmp_path, TABLE, {"ev.json": evil_schema()}))
    schema = table.schemas.schema_for("ev.x")
    assert schema is not None
    started = time.monotonic()
    error = schema.error({"name": SUBJECT, SUBJECT: 1, "a" * 5000 + "!": "x"})
    assert time.monotonic() - started < 0.5
    assert error is not None and "does not match" in error
    every = schema.errors({"name": SUBJECT, "aaa": "x"})
    assert any("'aaa'" not in e and "does not match" in e for e in every)
    assert any("is not of type 'integer'" in e for e in every)  # patternProperties applied


def test_where_regex_runs_in_linear_time() -> None:
    """`where: {regex: ...}` with a backtracking-prone pattern answers at once."""
    where = compile_where({"name": {"regex": EVIL}})
    started = time.monotonic()
    assert not where.holds({"name": "a" * 100_000 + "!"})
    assert where.holds({"name": "aaaa"})
    assert time.monotonic() - started < 0.5


def test_lookaround_pattern_refused_at_load_with_file_and_line(tmp_path: Path) -> None:
    """A where regex the linear-time engine cannot run is a config error at its line."""
    text = TABLE + "    where:\n      name: {regex: '(?=a)b'}\n"
    path = write_table(tmp_path, text, {"ev.json": {"type": "object"}})
    with pytest.raises(ConfigError) as caught:
        load_table(path)
    [problem] = caught.value.problems
    assert problem.line == text.splitlines().index("      name: {regex: '(?=a)b'}") + 1
    assert "look-around" in problem.message


async def test_router_dead_letters_a_catastrophic_event_and_keeps_routing(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """The event that froze the router is dead-lettered promptly; the next one routes."""
    table = table_from(TABLE, {"ev.json": evil_schema()})
    async with running(table, url):
        r.xadd("ingress", {"type": "ev.a", "data": json.dumps({"name": SUBJECT})})
        r.xadd("ingress", {"type": "ev.b", "data": json.dumps({"name": "aaa"})})
        await wait_for(lambda: r.exists("out") and r.exists("synapse:dlq"), timeout_s=10)
    [(_, dead)] = r.xrange("synapse:dlq")
    assert dead[b"synapse-reason"] == b"schema_violation"
    assert b"does not match" in dead[b"synapse-error"]


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("missing.json", "not one of the schema files"),
        ("http://127.0.0.1:9/x.json", "never fetched"),
        ("#/$defs/nope", "nothing at #/$defs/nope"),
    ],
)
def test_dangling_ref_is_a_config_problem_with_file_and_line(
    tmp_path: Path, ref: str, message: str
) -> None:
    """A $ref to a missing file, to http://, or to no pointer: file:line, no traceback."""
    schema = '{"type": "object",\n "properties": {\n  "a": {"$ref": "REF"}}}'.replace("REF", ref)
    path = write_table(tmp_path, TABLE, {"ev.json": {}})
    (path.parent / "schemas" / "ev.json").write_text(schema)
    with pytest.raises(ConfigError) as caught:
        load_table(path)
    [problem] = caught.value.problems
    assert problem.file == str(path.parent / "schemas" / "ev.json")
    assert problem.line == 3
    assert message in problem.message


def test_dangling_ref_daemon_exits_78_and_check_names_the_line(tmp_path: Path) -> None:
    """Start-up on a dangling $ref: config_invalid and exit 78; check prints file:line."""
    path = write_table(tmp_path, TABLE, {"ev.json": {}})
    (path.parent / "schemas" / "ev.json").write_text('{\n"$ref": "http://127.0.0.1:9/x"}')
    bin_dir = ROOT / ".venv" / "bin"
    daemon = subprocess.run(
        [str(bin_dir / "synapse-router"), "--config", str(path), "--redis-url",
         "redis://127.0.0.1:1", "--metrics-addr", "127.0.0.1:0", "--log-format", "json"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert daemon.returncode == EXIT_CONFIG, daemon.stderr
    assert b'"config_invalid"' in daemon.stderr and b"Traceback" not in daemon.stderr
    check = subprocess.run(
        [str(bin_dir / "synapse"), "check", "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.returncode == 1
    assert f"{path.parent / 'schemas' / 'ev.json'}:2: $ref" in check.stderr


def sparse(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
    return path


def test_huge_sparse_schema_file_refused_before_reading(tmp_path: Path) -> None:
    """A 3 GB sparse schema file is refused by size, naming the file (no MemoryError)."""
    path = write_table(tmp_path, TABLE, {"ev.json": {"type": "object"}})
    big = sparse(path.parent / "schemas" / "big.json", 3 << 30)
    with pytest.raises(ConfigError) as caught:
        load_table(path)
    [problem] = caught.value.problems
    assert problem.file == str(big)
    assert f"is {3 << 30} bytes; the limit is {MAX_SCHEMA_BYTES}" in problem.message


def test_huge_sparse_routes_file_refused_before_reading(tmp_path: Path) -> None:
    """A 3 GB sparse routes.yaml is refused by size, naming the file."""
    path = sparse(tmp_path / "routes.yaml", 3 << 30)
    with pytest.raises(ConfigError) as caught:
        load_table(path)
    assert f"file is {3 << 30} bytes" in str(caught.value)


@pytest.mark.parametrize("command", ["route", "publish"])
def test_huge_event_file_refused_with_a_clear_error(tmp_path: Path, command: str) -> None:
    """`synapse route/publish` on a 3 GB event file: a usage error naming it, exit 2."""
    path = write_table(tmp_path, TABLE, {"ev.json": {"type": "object"}})
    big = sparse(tmp_path / "event.json", 3 << 30)
    args = [big] if command == "route" else ["ingress", "--file", big]
    done = subprocess.run(
        [str(ROOT / ".venv/bin/synapse"), command, "--config", str(path), *map(str, args)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "SYNAPSE_REDIS_URL": "redis://127.0.0.1:1"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"{big}: file is {3 << 30} bytes" in done.stderr
