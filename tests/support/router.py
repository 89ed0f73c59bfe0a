"""The real ``synapse-router`` as a subprocess: the one harness every process test uses.

A ``RouterProcess`` is built, then ``start()``ed (and may be started again after a
kill: each run's log lines are told apart). Its stderr (JSON logs) goes to a file,
so a kill -9 loses nothing of what it wrote; its metrics port is found from the
``router_starting`` line and scraped with prometheus-client's parser.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from signal import SIGCONT, SIGTERM
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.polling import wait_sync

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]

LogLine = dict[str, Any]
SampleKey = tuple[str, tuple[tuple[str, str], ...]]
Samples = dict[SampleKey, float]


def script(name: str) -> str:
    """Path of a console script installed next to this interpreter."""
    return str(BIN / name)


def key(name: str, **labels: str) -> SampleKey:
    """The key of one sample in ``RouterProcess.scrape()``."""
    return name, tuple(sorted(labels.items()))


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any SYNAPSE_* or systemd setting that would change the daemon
    (SYNAPSE_SERVER, the engine the suite runs on, is kept)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYNAPSE_", "NOTIFY_", "WATCHDOG_")) and k != "STATE_DIRECTORY"
    }
    if "SYNAPSE_SERVER" in os.environ:
        env["SYNAPSE_SERVER"] = os.environ["SYNAPSE_SERVER"]
    env.update(extra)
    return env


def router_args(
    config: Path | None, url: str | None, *extra: str, consumer: str | None = None
) -> list[str]:
    """The usual command line: the table, the URL (none: the embedded server), a free
    metrics port, JSON logs."""
    args = ["--config", str(config or ROOT / "config" / "routes.yaml")]
    if url:
        args += ["--redis-url", url]
    if consumer:
        args += ["--consumer", consumer]
    return [*args, "--metrics-addr", "127.0.0.1:0", "--log-format", "json", *extra]


class RouterProcess:
    """One ``synapse-router`` (or ``bin/run``) process at a time, its JSON logs in a file."""

    def __init__(
        self,
        config: Path | None,
        url: str | None,
        *,
        consumer: str | None = None,
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
        extra: Sequence[str] = (),
        program: str | None = None,
        cwd: Path | None = None,
        args: Sequence[str] | None = None,
    ) -> None:
        self.url = url
        self.consumer = consumer
        self.command = [
            program or script("synapse-router"),
            *(router_args(config, url, *extra, consumer=consumer) if args is None else args),
        ]
        self.env = clean_env(**(env or {}))
        self.cwd = cwd
        if log_path is None:
            log_path = Path(tempfile.mkdtemp(prefix="router-")) / "router.log"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._offset = 0  # where this run's lines start in the log file
        self._port = 0

    # -- the process -------------------------------------------------------------------

    def start(self, *, wait_ready: bool = False, timeout_s: float = 30.0) -> RouterProcess:
        """Start (again); with ``wait_ready``, return once /readyz answers 200."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._port = 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        if wait_ready:
            self.wait_ready(timeout_s)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout_s: float = 30.0) -> int:
        """Wait for the process to exit: its exit code."""
        assert self.process is not None, "not started"
        return self.process.wait(timeout_s)

    def signal(self, signum: int) -> None:
        if self.alive():
            os.kill(self.pid, signum)

    def stop(self, timeout_s: float = 30.0, signum: int = SIGTERM) -> int:
        """Send ``signum`` (a stopped process is continued first) and wait: the exit code."""
        self.signal(SIGCONT)
        self.signal(signum)
        return self.wait(timeout_s)

    def kill(self) -> None:
        """kill -9: no drain, no goodbye."""
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait(10)

    # -- the logs ----------------------------------------------------------------------

    def text(self) -> str:
        """This run's log output."""
        with contextlib.suppress(FileNotFoundError), self.log_path.open("rb") as f:
            f.seek(self._offset)
            return f.read().decode("utf-8", "replace")
        return ""

    @property
    def raw(self) -> list[str]:
        """This run's log lines as written."""
        return self.text().splitlines()

    def tail(self, n: int = 3000) -> str:
        return self.text()[-n:]

    def events(self, name: str | None = None) -> list[LogLine]:
        """This run's JSON log lines (``event`` == ``name`` when given)."""
        out = []
        for line in self.raw:
            with contextlib.suppress(ValueError):
                item = json.loads(line)
                if isinstance(item, dict) and (name is None or item.get("event") == name):
                    out.append(item)
        return out

    def wait_log(
        self,
        event: str,
        timeout_s: float = 15.0,
        where: Callable[[LogLine], bool] = lambda _: True,
        count: int = 1,
    ) -> LogLine:
        """The ``count``-th log line named ``event`` that satisfies ``where`` (failing early
        if the process exits without it)."""
        found: list[LogLine] = []

        def seen() -> bool:
            exited = not self.alive()
            found[:] = [line for line in self.events(event) if where(line)]
            if len(found) >= count:
                return True
            if exited:
                code = None if self.process is None else self.process.returncode
                raise AssertionError(f"router exited {code} before {event}: {self.tail()}")
            return False

        wait_sync(seen, timeout_s, f"log event {event}: {self.tail(500)}")
        return found[count - 1]

    # -- the port ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._port:
            start = self.wait_log("router_starting", 30.0)
            self._port = int(start["metrics"].rsplit(":", 1)[1].split("/", 1)[0])
        return self._port

    def get(self, path: str, timeout_s: float = 5.0) -> tuple[int, str]:
        """GET ``path`` on the metrics port: (status, body); (0, "") when nothing answers."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}{path}", timeout=timeout_s
            ) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()
        except OSError:
            return 0, ""

    def readyz(self) -> int:
        return self.get("/readyz")[0]

    def ready(self) -> bool:
        return self.readyz() == 200

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        def ready() -> bool:
            if not self.alive():
                code = None if self.process is None else self.process.returncode
                raise AssertionError(f"router exited {code}: {self.tail()}")
            return self.ready()

        wait_sync(ready, timeout_s, f"/readyz 200: {self.tail(500)}")

    # -- metrics -----------------------------------------------------------------------

    def scrape(self) -> Samples:
        """Every sample of /metrics, keyed by (name, sorted labels)."""
        status, body = self.get("/metrics")
        assert status == 200, status
        samples = {}
        for family in text_string_to_metric_families(body):
            for s in family.samples:
                samples[key(s.name, **s.labels)] = s.value
        return samples

    def metric(self, name: str, **labels: str) -> float:
        """One sample's value, 0 when absent."""
        return self.scrape().get(key(name, **labels), 0.0)

    def total(self, name: str) -> float:
        """A metric summed over all its labels (e.g. consumed over every source)."""
        return sum(v for (n, _), v in self.scrape().items() if n == name)

    def wait_metric(
        self, name: str, check: Callable[[float], bool], timeout_s: float = 10.0, **labels: str
    ) -> float:
        """Wait until ``check(value)`` holds for a metric (the exposition is cached ~1 s)."""
        wait_sync(lambda: check(self.metric(name, **labels)), timeout_s, f"{name} {labels}")
        return self.metric(name, **labels)

    def wait_scrape(
        self, expected: dict[SampleKey, float | None], timeout_s: float = 10.0
    ) -> Samples:
        """Scrape until every expected sample has its value (None: absent)."""
        last: list[Samples] = [{}]

        def matches() -> bool:
            last[0] = self.scrape()
            return {k: last[0].get(k) for k in expected} == expected

        wait_sync(matches, timeout_s, f"metrics {expected}")
        return last[0]
