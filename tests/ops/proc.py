"""The real ``synapse-router`` as a subprocess: spawn, read its JSON log, scrape its port."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

BIN = Path(sys.executable).parent


def script(name: str) -> str:
    """Path of a console script installed next to this interpreter."""
    return str(BIN / name)


LogLine = dict[str, Any]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The key of one sample in ``RouterProcess.scrape()``."""
    return name, tuple(sorted(labels.items()))


class RouterProcess:
    """One ``synapse-router`` process; its stderr JSON lines are collected as they come."""

    def __init__(
        self,
        config: Path,
        url: str | None,
        *,
        env: dict[str, str] | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        args = [
            script("synapse-router"),
            "--config",
            str(config),
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
            *extra,
        ]
        if url:
            args += ["--redis-url", url]
        full_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SYNAPSE_", "NOTIFY_", "WATCHDOG_"))
        }
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=full_env,
            start_new_session=True,
        )
        self.lines: list[LogLine] = []
        self.raw: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._port: int | None = None

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            text = raw.decode("utf-8", "replace").rstrip("\n")
            with self._lock:
                self.raw.append(text)
                with contextlib.suppress(ValueError):
                    self.lines.append(json.loads(text))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def logs(self, event: str) -> list[LogLine]:
        with self._lock:
            return [line for line in self.lines if line.get("event") == event]

    def wait_log(
        self,
        event: str,
        timeout_s: float = 15.0,
        where: Callable[[LogLine], bool] = lambda _: True,
        count: int = 1,
    ) -> LogLine:
        """The ``count``-th log line named ``event`` that satisfies ``where``."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = [line for line in self.logs(event) if where(line)]
            if len(found) >= count:
                return found[count - 1]
            if self.proc.poll() is not None and not self._reader.is_alive():
                raise AssertionError(
                    f"router exited {self.proc.returncode} before {event}: "
                    + "\n".join(self.raw[-20:])
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {event} log within {timeout_s}s: " + "\n".join(self.raw[-20:])
                )
            time.sleep(0.02)

    @property
    def port(self) -> int:
        if self._port is None:
            start = self.wait_log("router_starting")
            self._port = int(start["metrics"].rsplit(":", 1)[1].split("/", 1)[0])
        return self._port

    def get(self, path: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}{path}", timeout=timeout_s
            ) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"router exited {self.proc.returncode}: " + "\n".join(self.raw[-20:])
                )
            if time.monotonic() > deadline:
                raise AssertionError("router not ready: " + "\n".join(self.raw[-20:]))
            time.sleep(0.02)

    def scrape(self) -> Samples:
        """Every sample of /metrics, keyed by (name, sorted labels)."""
        status, body = self.get("/metrics")
        assert status == 200, status
        samples = {}
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return samples

    def wait_scrape(
        self,
        expected: dict[tuple[str, tuple[tuple[str, str], ...]], float | None],
        timeout_s: float = 10.0,
    ) -> Samples:
        """Scrape until every expected sample has its value (None: absent); the port caches ~1 s."""
        deadline = time.monotonic() + timeout_s
        while True:
            samples = self.scrape()
            seen = {key: samples.get(key) for key in expected}
            if seen == expected:
                return samples
            if time.monotonic() > deadline:
                raise AssertionError(f"metrics {seen} != expected {expected}")
            time.sleep(0.05)

    def metric(self, name: str, **labels: str) -> float | None:
        return self.scrape().get((name, tuple(sorted(labels.items()))))

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        code = self.proc.wait(timeout_s)
        self._close()
        return code

    def _close(self) -> None:
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close()
