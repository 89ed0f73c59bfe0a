"""systemd notifications without libsystemd: datagrams to ``$NOTIFY_SOCKET``.

``READY=1`` once connected, ``RELOADING=1`` + ``MONOTONIC_USEC=`` then ``READY=1``
around a reload, ``STOPPING=1``, ``STATUS=`` text, and ``WATCHDOG=1`` at most every
half ``WATCHDOG_USEC``, sent only when the routing loop reports progress.
Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op.

A reload before the first ``READY=1`` (a SIGHUP during start-up) sends no
``RELOADING=1``/``READY=1`` pair: its ``READY=1`` would tell systemd the service is
up before Redis is reachable. Only ``STATUS=`` is sent then.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if path:
            self.address = "\0" + path[1:] if path.startswith("@") else path
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_s: float | None = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1_000_000 / 2
        self._last_ping = 0.0
        self.announced = False  # READY=1 sent once: reloads may now say RELOADING=1
        self._stopping = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> None:
        if self.address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self.address)
                sock.sendall("\n".join(lines).encode())
        except OSError:
            pass  # systemd gone or socket full: never fatal

    def ready(self, status: str) -> None:
        self.announced = True
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        if not self.announced:
            self.status("reloading config")
            return
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading config")

    def reloaded(self, status: str) -> None:
        """End of a reload, good or bad: ``READY=1`` again (if started), with ``status``."""
        status = " ".join(status.split())[:1000]  # one line, bounded: STATUS= ends at newline
        if self.announced:
            self.send("READY=1", f"STATUS={status}")
        else:
            self.status(status)

    def stopping(self) -> None:
        if not self._stopping:
            self._stopping = True
            self.send("STOPPING=1", "STATUS=stopping: finishing the batch in hand")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def progress(self) -> None:
        """Called by the routing loop when it makes progress or idles normally."""
        if self.watchdog_s is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_s:
            self._last_ping = now
            self.send("WATCHDOG=1")
