"""The trial run's server: the bundled Valkey/Redis in the state folder, for a router
started with no URL (``bin/run``).

``<state>/data`` holds its data and AOF, ``<state>/server.pid`` its pid, and
``<state>/redis.url`` its URL, which the ``synapse`` CLI and ``synapse.client`` read when
given no URL. Called with the state lock held (statelock.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from synapse import log as logging
from synapse import settings
from synapse.embedded import EmbeddedServer
from synapse.files import read_small_text


def start(state: Path, log: logging.Logger) -> EmbeddedServer:
    """Start the bundled server with its data in ``state`` (a server a killed router left
    behind stopped first) and write its URL to ``<state>/redis.url`` for the CLI."""
    data = state / "data"
    pidfile = state / "server.pid"
    _stop_stale(pidfile, data, log)
    server = EmbeddedServer(data_dir=data, extra_args=("--pidfile", str(pidfile.resolve())))
    state.mkdir(parents=True, exist_ok=True)
    server.start()
    (state / settings.URL_FILE).write_text(server.url + "\n")
    log.info(
        "embedded_server_started",
        url=server.url,
        data=str(data),
        url_file=str(state / settings.URL_FILE),
        server=server.binary,
        allocator=server.allocator,
    )
    return server


def _stop_stale(pidfile: Path, data: Path, log: logging.Logger) -> None:
    """A server left behind by a router killed with SIGKILL would share our AOF: stop it.

    Only called with the state lock held (statelock.py), so no live router owns that
    server; and only a process whose working directory is our data folder (the server
    chdirs to its --dir) is ours: a reused pid is never signalled.
    """
    try:
        pid = int(read_small_text(pidfile))
    except (OSError, ValueError):
        return
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return
    if cwd != str(data.resolve()):
        return
    log.warning("stale_embedded_server", pid=pid)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def stop(state: Path, server: EmbeddedServer, log: logging.Logger) -> None:
    """Stop ``server`` and remove ``<state>/redis.url`` (nothing answers there now)."""
    server.stop()
    with contextlib.suppress(OSError):
        (state / settings.URL_FILE).unlink()
    log.info("embedded_server_stopped")
