"""Processes under measurement: router workers, CPU pinning, CPU and RSS readings."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass(frozen=True, slots=True)
class Pinning:
    """Which CPUs the server, the router processes and this process run on (None: any)."""

    server: set[int] | None = None
    routers: set[int] | None = None
    driver: set[int] | None = None

    @staticmethod
    def choose(enabled: bool) -> Pinning:
        """Server on one core, routers on another, the load driver beside the server."""
        cpus = sorted(os.sched_getaffinity(0))
        if not enabled or len(cpus) < 2:
            return Pinning()
        return Pinning(server={cpus[0]}, routers={cpus[1]}, driver={cpus[0]})

    @property
    def describe(self) -> str:
        if self.server is None:
            return "not pinned"
        return f"server cpu {sorted(self.server)}, routers cpu {sorted(self.routers or ())}"


def pin(pid: int, cpus: set[int] | None) -> None:
    if cpus is not None:
        os.sched_setaffinity(pid, cpus)


def cpu_s(pid: int, children: bool = False) -> float:
    """User + system CPU seconds of ``pid`` so far (all threads; ``children``: plus its
    exited children's, e.g. a server's AOF rewrites)."""
    t = psutil.Process(pid).cpu_times()
    own = float(t.user + t.system)
    if not children:
        return own
    live = 0.0
    for child in psutil.Process(pid).children():
        with contextlib.suppress(psutil.Error):
            c = child.cpu_times()
            live += float(c.user + c.system)
    return own + float(t.children_user + t.children_system) + live


def rss_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 1e6


@dataclass
class Worker:
    """One ``bench.worker`` (or ``module``) subprocess: set up, then started on ``go()``."""

    args: list[str]
    cpus: set[int] | None = None
    module: str = "bench.worker"
    cwd: Path | None = None  # another copy of the code (an A/B against an older revision)
    process: subprocess.Popen[bytes] = field(init=False)

    def __post_init__(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=self.cwd,
        )
        pin(self.process.pid, self.cpus)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != b"ready":
            self.stop()
            raise RuntimeError(f"worker {self.args[0]} failed to start: {line!r}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        self.process.stdin.flush()

    def cpu_s(self) -> float:
        return cpu_s(self.pid)

    def wait_line(self, timeout_s: float) -> str:
        """The next line the process prints (``done N`` from a producer)."""
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        if not ready:
            raise RuntimeError(f"{self.module} {self.args[0]}: no output within {timeout_s}s")
        return self.process.stdout.readline().decode().strip()

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_s)
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(Exception):
                if stream is not None:
                    stream.close()
