"""Real ``synapse-router`` subprocesses for the scale-out tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RouterProcess:
    """One daemon process; its stderr (JSON logs) goes to a file."""

    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, config: Path, url: str, consumer: str, folder: Path) -> RouterProcess:
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / f"router-{consumer}.log"
        command = [
            sys.executable,
            "-c",
            "from synapse.daemon import main; main()",
            "--config",
            str(config),
            "--redis-url",
            url,
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--consumer",
            consumer,
        ]
        with log.open("wb") as sink:
            process = subprocess.Popen(
                command, cwd=ROOT, stdout=sink, stderr=sink, stdin=subprocess.DEVNULL
            )
        return cls(process, log)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def metrics_url(self) -> str | None:
        """The /metrics URL the daemon logged in ``router_starting`` (None until then)."""
        for line in self.text().splitlines():
            if '"router_starting"' in line:
                url: str = json.loads(line)["metrics"]
                return url
        return None

    def consumed(self) -> float:
        """synapse_events_consumed_total summed over sources, scraped from the port."""
        url = self.metrics_url()
        assert url is not None, self.text()
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("synapse_events_consumed_total{")
        )

    def stop(self, timeout_s: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
