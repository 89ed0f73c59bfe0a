"""Ops fixtures: the real daemon as a subprocess, and system tools that may be missing."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.router import RouterProcess


def need_tool(name: str) -> str:
    """Path of ``name``; skip with the reason when missing, but fail when CI=true."""
    found = shutil.which(name)
    if found:
        return found
    why = f"{name} is not installed (Debian: apt-get install {TOOL_PACKAGES.get(name, name)})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{why}; CI=true needs it")
    pytest.skip(why)


TOOL_PACKAGES = {"promtool": "prometheus", "systemd-analyze": "systemd"}


@pytest.fixture
def spawn(url: str, tmp_path: Path) -> Iterator[Callable[..., RouterProcess]]:
    """Start ``synapse-router`` subprocesses on the test server; all killed at teardown."""
    started: list[RouterProcess] = []

    def start(config: Path, **kwargs: Any) -> RouterProcess:
        log_path = tmp_path / "logs" / f"router-{len(started)}.log"
        proc = RouterProcess(config, kwargs.pop("redis_url", url), log_path=log_path, **kwargs)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.kill()
