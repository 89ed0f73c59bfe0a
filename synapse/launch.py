"""The ``synapse-router`` console script: catch SIGHUP before anything heavy is imported.

SIGHUP's default action ends a process. ``systemctl reload`` (or an operator's
``kill -HUP``) can land while the daemon is still importing its modules and
loading the table, which takes a few hundred milliseconds; so the entry point
installs a handler that only remembers the signal, first thing, and the daemon
turns a remembered SIGHUP into a reload once its event loop runs. This module
imports nothing but ``signal`` so the unguarded window is the interpreter's own
start-up (~15 ms).
"""

from __future__ import annotations

import signal
from types import FrameType

_hup_pending = False


def _remember_hup(signum: int, frame: FrameType | None) -> None:
    global _hup_pending
    _hup_pending = True


def install_early_hup() -> None:
    """Catch SIGHUP until the event loop takes it over (idempotent)."""
    signal.signal(signal.SIGHUP, _remember_hup)


def hup_pending() -> bool:
    """Whether a SIGHUP arrived before the event loop took over."""
    return _hup_pending


def main() -> None:
    install_early_hup()
    from synapse.routercli import main as daemon_main

    daemon_main()
