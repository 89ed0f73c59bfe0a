"""Python programs run as real processes, their output in a file the test polls."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.polling import wait_sync


class Program:
    """``python <args>`` with SYNAPSE_URL set, stdout+stderr to ``log``."""

    def __init__(self, args: list[str], url: str, log: Path, cwd: Path | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SYNAPSE_")}
        env["SYNAPSE_URL"] = url
        env["PYTHONUNBUFFERED"] = "1"
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env,
                cwd=cwd,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, text: str, timeout_s: float = 30.0) -> None:
        """Until ``text`` is in the output; fail (with the output) at the deadline or on exit."""

        def seen() -> bool:
            if self.process.poll() is not None and text not in self.output():
                raise AssertionError(f"exited {self.process.returncode}:\n{self.output()[-3000:]}")
            return text in self.output()

        wait_sync(seen, timeout_s, lambda: f"{text!r}:\n{self.output()[-3000:]}", step_s=0.05)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait: the exit code."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
        return self.process.wait(timeout_s)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
