"""A server of ours as a child process: a free port, the spawn, the wait until it is ready,
the stop.

Shared by the embedded Valkey (``embedded.py``), the Kafka test broker
(``tansu.py``) and the bench's NATS server (``bench/natsjs.py``). Each child runs
in a session of its own (a Ctrl-C to the parent's terminal does not reach it:
the parent stops it), reads nothing, and writes its output to a log file of
ours or nowhere.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from synapse import files
from synapse.errors import SynapseError

POLL_S = 0.02


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (another process may take it before we bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def accepts(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``host:port`` accepts a TCP connection."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def spawn(
    args: Sequence[str], *, log: Path | None = None, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``args`` in a new session; stdout and stderr appended to ``log`` (or dropped)."""
    if log is None:
        return subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    with log.open("ab") as out:
        return subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )


def log_tail(path: Path, size: int = 2000) -> str:
    """The last ``size`` bytes of a child's log, as text ('' when there is none)."""
    if not path.exists():
        return ""
    return files.tail(path, size).decode(errors="replace")


def wait_ready(
    process: subprocess.Popen[bytes] | None,
    ready: Callable[[], bool],
    *,
    name: str,
    timeout_s: float,
    log: Path | None = None,
    where: str = "",
) -> None:
    """Poll ``ready`` until it holds; SynapseError (with the log's tail) if the child exits
    first or the deadline passes. ``where``: how the timeout names it (``on port N``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log_tail(log) if log is not None else ""
            raise SynapseError(f"{name} exited with {process.returncode}: {tail}")
        if ready():
            return
        time.sleep(POLL_S)
    raise SynapseError(f"{name} {where + ' ' if where else ''}not ready within {timeout_s}s")


def send(process: subprocess.Popen[bytes] | None, signum: int) -> None:
    """Signal the child if it still runs."""
    if process is not None and process.poll() is None:
        os.kill(process.pid, signum)


def kill(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL and reap: the crash case."""
    if process is not None:
        send(process, signal.SIGKILL)
        process.wait(10)


def stop(process: subprocess.Popen[bytes] | None, timeout_s: float = 10.0) -> None:
    """SIGTERM (after a SIGCONT, in case it was stopped), then SIGKILL after ``timeout_s``."""
    if process is None or process.poll() is not None:
        return
    send(process, signal.SIGCONT)
    send(process, signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout_s)
