"""examples/: trainer, runtime and monitor run as processes against a real router."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.client.procs import Program
from tests.conftest import ROOT, wait_sync
from tests.support.router import RouterProcess

EXAMPLES = ROOT / "examples"


@pytest.fixture
def router(url: str, tmp_path: Path) -> Iterator[RouterProcess]:
    """The router on the shipped config/routes.yaml, as a process."""
    config = ROOT / "config" / "routes.yaml"
    proc = RouterProcess(config, url, log_path=tmp_path / "router.log").start(wait_ready=True)
    yield proc
    proc.kill()


def trainer(url: str, tmp_path: Path, *args: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "SYNAPSE_URL": url}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "trainer.py"), "--artifacts", str(tmp_path / "art"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_trainer_runtime_and_monitor(
    router: RouterProcess, url: str, r: redis.Redis, tmp_path: Path
) -> None:
    """model.ready reaches the runtime, which loads the file; a failed load alerts the monitor."""
    runtime = Program([str(EXAMPLES / "runtime.py")], url, tmp_path / "runtime.log", tmp_path)
    monitor = Program([str(EXAMPLES / "monitor.py")], url, tmp_path / "monitor.log", tmp_path)
    try:
        out = trainer(url, tmp_path)
        assert "published model.ready m1 1.0.0" in out
        runtime.wait_for(f"runtime: loaded m1 1.0.0 from {tmp_path / 'art' / 'm1-1.0.0.onnx'}")
        assert r.xlen("training-events") == 4  # 3 progress + completed, routed by the table

        trainer(url, tmp_path, "--model-id", "m2", "--no-artifact")
        monitor.wait_for("ALERT ERROR runtime: cannot load m2 1.0.0")
        wait_sync(lambda: r.exists("synapse:dlq") == 1 and r.xlen("synapse:dlq") == 1)
        [(_, letter)] = r.xrange("synapse:dlq")
        assert letter[b"synapse-reason"] == b"handler_error"
        assert letter[b"synapse-consumer"] == b"runtime"
        assert b"FileNotFoundError" in letter[b"synapse-error"]
        wait_sync(lambda: monitor.output().count("ALERT ERROR runtime: cannot load m2") == 3)
        assert runtime.stop() == 0 and monitor.stop() == 0
    finally:
        runtime.kill()
        monitor.kill()
