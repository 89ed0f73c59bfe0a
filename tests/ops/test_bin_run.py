"""bin/run sets up a venv with the runtime only: pytest, mypy and ruff are bin/test's."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bin_run_installs_the_runtime_only(tmp_path: Path) -> None:
    """A fresh venv made by bin/run has synapse-router and its dependencies, no dev tools;
    bin/run's own arguments never reach the installer as extras."""
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNAPSE_", "VIRTUAL_ENV"))}
    env["SYNAPSE_VENV"] = str(venv)
    done = subprocess.run(
        [str(ROOT / "bin" / "run"), "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--config" in done.stdout  # synapse-router --help ran
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "freeze"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.lower()
    assert "synapse-router==" in installed and "redis==" in installed
    for tool in ("pytest", "mypy", "ruff", "types-pyyaml"):
        assert f"\n{tool}==" not in f"\n{installed}", tool
    assert not (venv / "bin" / "pytest").exists()
