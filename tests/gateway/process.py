"""Run the real ``synapse-gateway`` console script as a subprocess (tests and the bench)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

GATEWAY = str(Path(sys.executable).parent / "synapse-gateway")


class GatewayProcess:
    """``synapse-gateway ARGS`` with stderr captured to a file; ``wait_ready`` polls /healthz."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        base = {k: v for k, v in os.environ.items() if not k.startswith("SYNAPSE_")}
        self.proc = subprocess.Popen(
            [GATEWAY, "--log-format", "json", *args],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env={**base, **(env or {})},
        )

    def wait_ready(self, base: str, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited {self.proc.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"gateway not ready in {timeout_s}s: {self.log()}")
            time.sleep(0.05)

    def stop(self, timeout_s: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")
