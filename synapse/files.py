"""Bounded reads: no file Synapse reads can make it allocate more than a limit.

A file's size is checked before it is read (``stat``), and the read itself takes
at most ``limit + 1`` bytes whatever ``stat`` said (a file growing meanwhile, a
device, a FIFO): a 3 GB sparse file is a clear error naming the file, never a
MemoryError. Every file the project reads goes through here: routes.yaml, schema
files, route test files, event files, the Redis password and URL files, pid files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from synapse.errors import SynapseError

#: Secrets, URLs, pids: a line of text.
SMALL_FILE_BYTES = 64 << 10


class TooLarge(SynapseError, OSError):
    """The file holds more than the limit; ``size`` is what was seen (at least limit + 1)."""

    def __init__(self, path: Path, size: int, limit: int) -> None:
        self.path = path
        self.size = size
        self.limit = limit
        super().__init__(f"{path}: file is {size} bytes; the limit is {limit}")


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of ``path``, refusing (TooLarge) more than ``limit`` before reading them."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise TooLarge(path, size, limit)
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise TooLarge(path, len(raw), limit)
    return raw


def read_small_text(path: Path) -> str:
    """A short text file (a secret, a URL, a pid), stripped; refuses more than 64 KiB."""
    return read_bounded(path, SMALL_FILE_BYTES).decode("utf-8", "replace").strip()


#: An event file or stdin given to ``synapse route`` / ``publish``: the largest event
#: ``router.max_event_bytes`` may allow is far below this.
MAX_INPUT_BYTES = 64 << 20


def read_input(name: str, stdin: BinaryIO, limit: int = MAX_INPUT_BYTES) -> bytes:
    """A file's bytes, or stdin's when ``name`` is ``-``; TooLarge past ``limit``."""
    if name != "-":
        return read_bounded(Path(name), limit)
    raw = stdin.read(limit + 1)
    if len(raw) > limit:
        raise TooLarge(Path("<stdin>"), len(raw), limit)
    return raw


def tail(path: Path, size: int) -> bytes:
    """The last ``size`` bytes of ``path`` (a log), without reading the rest."""
    with path.open("rb") as f:
        end = f.seek(0, os.SEEK_END)
        f.seek(max(0, end - size))
        return f.read(size)
