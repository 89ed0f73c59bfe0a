"""A server as a child process: readiness deadline, early exit, stop escalating to SIGKILL."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from synapse import child
from synapse.errors import SynapseError

#: A child that ignores SIGTERM, says so on stdout, then sleeps.
STUBBORN = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('armed', flush=True)\n"
    "time.sleep(60)\n"
)


def test_not_ready_by_the_deadline_is_an_error(tmp_path: Path) -> None:
    """A child that runs but never gets ready: SynapseError naming it and where, after the
    deadline; it is still running (the caller decides to stop it)."""
    proc = child.spawn([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(SynapseError, match=r"broker on port 1 not ready within 0\.2s"):
            child.wait_ready(proc, lambda: False, name="broker", timeout_s=0.2, where="on port 1")
        assert proc.poll() is None
    finally:
        child.stop(proc)


def test_early_exit_is_reported_with_the_log_tail(tmp_path: Path) -> None:
    """A child that exits before it is ready: SynapseError with its exit code and log's tail."""
    log = tmp_path / "child.log"
    script = "import sys; print('bad option --x', flush=True); sys.exit(3)"
    proc = child.spawn([sys.executable, "-c", script], log=log)
    with pytest.raises(SynapseError, match=r"(?s)broker exited with 3: .*bad option --x"):
        child.wait_ready(proc, lambda: False, name="broker", timeout_s=10, log=log)


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    """A child that ignores SIGTERM is killed once the stop's timeout passes."""
    log = tmp_path / "child.log"
    proc = child.spawn([sys.executable, "-c", STUBBORN], log=log)
    child.wait_ready(proc, lambda: b"armed" in log.read_bytes(), name="stubborn", timeout_s=10)
    child.stop(proc, timeout_s=0.3)
    assert proc.returncode == -signal.SIGKILL


def test_stop_and_kill_of_an_ended_child_are_harmless() -> None:
    """stop/kill/send on a child that already exited (or None) do nothing and raise nothing."""
    proc = child.spawn([sys.executable, "-c", "pass"])
    proc.wait(10)
    child.stop(proc)
    child.kill(proc)
    child.send(proc, signal.SIGTERM)
    child.stop(None)
    child.kill(None)
    assert proc.returncode == 0
