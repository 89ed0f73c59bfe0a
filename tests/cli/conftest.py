"""Fixtures for the ``synapse`` CLI tests: a CliRunner bound to the test server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from synapse.cli import main

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "config" / "routes.yaml"

Invoke = Callable[..., Result]


@pytest.fixture
def cli(url: str, tmp_path: Path) -> Invoke:
    """Run ``synapse ARGS`` in-process against the flushed test server."""

    def invoke(*args: str, input: str | bytes | None = None, **env: str | None) -> Result:
        runner = CliRunner()
        environ: dict[str, str | None] = {
            "SYNAPSE_REDIS_URL": url,
            "SYNAPSE_URL": None,
            "SYNAPSE_STATE_DIR": str(tmp_path / "state"),
            "SYNAPSE_CONFIG": str(SHIPPED),
            "SYNAPSE_DEBUG": None,
            "SYNAPSE_REDIS_PASSWORD": None,
        }
        environ.update(env)
        return runner.invoke(main, list(args), input=input, env=environ, catch_exceptions=False)

    return invoke


def as_json(result: Result) -> Any:
    """The JSON a --json command printed on stdout."""
    return json.loads(result.stdout)
