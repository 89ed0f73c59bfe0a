"""The state folder has one owner: a lock held for the life of the router that uses it.

The embedded server's data, its pid file and ``redis.url`` live in the state
folder (``.synapse`` or ``$STATE_DIRECTORY``). A second router started on the
same folder must not touch any of it: it fails to take the lock, says "already
running (pid N)" and exits, leaving the first router and its server alone.
The lock is ``fcntl.flock`` on ``<state>/router.lock``: the kernel drops it when
the owner dies, however it dies, so a lock is never stale; the file holds the
owner's pid, for the message only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import ClassVar

from synapse.errors import EXIT_TEMPFAIL, SynapseError
from synapse.files import read_small_text

LOCK_FILE = "router.lock"


class AlreadyRunning(SynapseError):
    """Another live router owns the state folder."""

    exit_code: ClassVar[int] = EXIT_TEMPFAIL  # may work once the other one stops


class StateLock:
    """An exclusive, non-blocking flock on the state folder, held until ``release``."""

    def __init__(self, state: Path) -> None:
        self.path = state / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> StateLock:
        """Take the lock or raise AlreadyRunning naming the owner's pid; nothing else is touched."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            owner = ""
            with contextlib.suppress(OSError):
                owner = read_small_text(self.path)
            raise AlreadyRunning(
                f"already running (pid {owner or '?'}): {self.path.parent} is in use"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
