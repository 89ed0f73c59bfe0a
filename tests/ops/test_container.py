"""The Dockerfile: its key lines, its install step, and its health check against a real router."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_sync, write_table
from tests.ops.test_reload import EV_SCHEMA, TABLE_A
from tests.support.router import RouterProcess

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def values(word: str) -> list[str]:
    return [rest for w, rest in instructions() if w == word]


def test_dockerfile_key_lines() -> None:
    """Slim Python base, non-root user, synapse-router entry point, 0.0.0.0:9464, /etc/synapse."""
    build, runtime = values("FROM")  # two stages: the runtime ships only the built venv
    assert build.endswith(" AS build") and build.split()[0] == runtime
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", runtime)
    [user] = values("USER")
    assert user.split(":")[0] not in ("root", "0")
    assert json.loads(values("ENTRYPOINT")[-1]) == ["synapse-router"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "synapse-router" in scripts
    env = " ".join(values("ENV"))
    assert "SYNAPSE_METRICS_ADDR=0.0.0.0:9464" in env
    assert "SYNAPSE_CONFIG=/etc/synapse/routes.yaml" in env
    assert values("EXPOSE") == ["9464"]
    assert any("pip wheel --no-deps -w /wheels ." in run for run in values("RUN"))
    assert "--from=build /opt/synapse /opt/synapse" in values("COPY")
    assert "curl" not in DOCKERFILE.read_text() and "wget" not in DOCKERFILE.read_text()
    [health] = values("HEALTHCHECK")
    assert "/readyz" in health


def test_dockerfile_copies_only_existing_unignored_paths() -> None:
    """Every COPY source exists and is not excluded by .dockerignore."""
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for args in values("COPY"):
        if args.startswith("--from="):  # from the build stage, not the context
            continue
        *sources, _ = args.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source.split("/")[0] not in ignored, source


@pytest.mark.slow
def test_install_step_builds_a_wheel_with_the_entry_point(tmp_path: Path) -> None:
    """`pip install .` from only what the Dockerfile copies yields synapse-router -> launch."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "synapse", src / "synapse", ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path / "out"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr
    [wheel] = (tmp_path / "out").glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "synapse/config.schema.json" in names and "synapse/py.typed" in names
    assert "synapse-router = synapse.launch:main" in points


def healthcheck(port: int) -> int:
    """Run the Dockerfile's HEALTHCHECK command against ``port``; its exit code."""
    [health] = values("HEALTHCHECK")
    command = json.loads(health.split("CMD", 1)[1])
    command = [part.replace(":9464/", f":{port}/") for part in command]
    command[0] = sys.executable if command[0] == "python" else command[0]
    return subprocess.run(command, capture_output=True, timeout=30).returncode


def test_healthcheck_follows_readyz(
    tmp_path: Path, spawn: Callable[..., RouterProcess], url: str
) -> None:
    """The health check passes on a ready router and fails on one that cannot reach Redis."""
    config = write_table(tmp_path / "cfg", TABLE_A, {"ev.json": EV_SCHEMA})
    ready = spawn(config)
    ready.wait_ready()
    assert healthcheck(ready.port) == 0
    cut_off = spawn(config, redis_url="redis://127.0.0.1:1/0")
    cut_off.wait_log("redis_unavailable")
    wait_sync(lambda: cut_off.get("/healthz")[0] == 200, what="port up")
    assert healthcheck(cut_off.port) != 0
