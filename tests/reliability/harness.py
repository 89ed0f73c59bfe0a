"""The router as a real subprocess (kill -9 and all), its metrics port, and a test workload."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from synapse.config import RoutingTable, load_table
from tests.reliability.ledger import Fields, expect_of

ROUTER_BIN = str(Path(sys.executable).parent / "synapse-router")
GROUP = "synapse-router"
DLQ = "synapse:dlq"

ROUTES = """
    version: 1
    router:
      block_ms: 200
      claim_idle_ms: {claim_idle_ms}
      rescan_interval_ms: 1000
      batch: {batch}
      max_deliveries: {max_deliveries}
    sources: [ingress]
    routes:
      - name: models
        match: "model.*"
        to: [model-events, all-events]
      - name: prod
        match: model.ready
        where: {{stage: production}}
        to: [platform-events, model-events]
      - name: errors
        match: "*.error"
        to: [error-events]
      - name: audit
        match: "audit.*"
        to: [audit-events]
"""
DESTINATIONS = ("model-events", "all-events", "platform-events", "error-events", "audit-events")


def write_routes(
    folder: Path, *, claim_idle_ms: int = 1000, batch: int = 200, max_deliveries: int = 5
) -> tuple[Path, RoutingTable]:
    """routes.yaml for the reliability scenarios, written to ``folder``, and its table."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "routes.yaml"
    text = ROUTES.format(claim_idle_ms=claim_idle_ms, batch=batch, max_deliveries=max_deliveries)
    path.write_text(textwrap.dedent(text))
    return path, load_table(path)


_KINDS: list[tuple[str, Any]] = [
    ("model.ready", {"model_id": "m", "stage": "production"}),
    ("model.ready", {"model_id": "m", "stage": "staging"}),
    ("model.updated", {"model_id": "m"}),
    ("app.error", {"code": 500}),
    ("nothing.routes.this", {}),  # no route: dead-lettered
    ("model.ready", None),  # invalid JSON: dead-lettered
]


def mixed(
    table: RoutingTable, n: int, seed: int = 7, source: str = "ingress"
) -> Iterator[tuple[Fields, frozenset[str]]]:
    """``n`` events of several kinds (fan-out 1-3, dead letters), with where each must go."""
    rng = random.Random(seed)
    expectations: dict[int, frozenset[str]] = {}
    for _ in range(n):
        k = rng.randrange(len(_KINDS)) if rng.random() < 0.1 else rng.randrange(4)
        event_type, body = _KINDS[k]
        data = "{not json" if body is None else json.dumps({**body, "n": rng.randrange(10**6)})
        fields: dict[str | bytes, str | bytes] = {"type": event_type, "data": data}
        if k not in expectations:
            expectations[k] = expect_of(table, source, fields)
        yield fields, expectations[k]


class RouterProcess:
    """``synapse-router`` in its own process, JSON logs to a file, metrics on a free port."""

    def __init__(self, config: Path, url: str, log_path: Path, consumer: str | None = None) -> None:
        self.config = config
        self.url = url
        self.log_path = log_path
        self.consumer = consumer
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._offset = 0  # where this run's lines start in the (shared) log file

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, *, wait_ready: bool = True, timeout_s: float = 30.0) -> RouterProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SYNAPSE_")}
        args = [
            ROUTER_BIN,
            "--config",
            str(self.config),
            "--redis-url",
            self.url,
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ]
        if self.consumer:
            args += ["--consumer", self.consumer]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env
            )
        self.port = 0
        deadline = time.monotonic() + timeout_s
        while not self.port:
            for event in self.events("router_starting"):
                self.port = int(event["metrics"].rsplit(":", 1)[1].split("/")[0])
            self._check_alive(deadline)
        if wait_ready:
            self.wait_ready(deadline - time.monotonic())
        return self

    def _check_alive(self, deadline: float) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"router exited {self.process.returncode}: {self.tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"router not up in time: {self.tail()}")
        time.sleep(0.02)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.readyz() != 200:
            self._check_alive(deadline)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """kill -9: no drain, no goodbye."""
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait(10)

    def signal(self, signum: int) -> None:
        if self.alive():
            os.kill(self.pid, signum)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait: the exit code."""
        assert self.process is not None
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()
        except OSError:
            return 0, ""

    def readyz(self) -> int:
        return self.get("/readyz")[0] if self.port else 0

    def metrics(self) -> dict[str, float]:
        """Every sample as ``name{label="v",...}`` -> value."""
        status, text = self.get("/metrics")
        assert status == 200, status
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        key = name
        if labels:
            key += "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        return self.metrics().get(key, 0.0)

    def wait_metric(
        self, name: str, check: Callable[[float], bool], timeout_s: float = 10.0, **labels: str
    ) -> float:
        """Wait until ``check(value)`` holds for a metric (the exposition is cached ~1 s)."""
        wait_until(lambda: check(self.metric(name, **labels)), timeout_s, f"{name} {labels}")
        return self.metric(name, **labels)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """This run's JSON log lines (``event`` == ``name`` when given)."""
        out = []
        with contextlib.suppress(FileNotFoundError), self.log_path.open("rb") as f:
            f.seek(self._offset)
            for line in f.read().decode(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if isinstance(event, dict) and (name is None or event.get("event") == name):
                        out.append(event)
        return out

    def tail(self, n: int = 3000) -> str:
        with contextlib.suppress(FileNotFoundError):
            return self.log_path.read_text(errors="replace")[-n:]
        return ""


def wait_until(
    check: Any, timeout_s: float = 30.0, what: str = "condition", step_s: float = 0.02
) -> None:
    """Poll ``check()`` until true, or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(step_s)
