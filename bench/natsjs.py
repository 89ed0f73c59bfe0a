"""NATS JetStream beside Synapse: a ``nats-server`` of our own and the topology to compare.

The server is Debian's ``nats-server`` (``apt-get install nats-server``), never
one already running: it listens on a free port on 127.0.0.1 with its store in a
folder of ours. The topology is the closest JetStream gets to "2 copies by
type": an ``AUDIT`` file stream on ``events.>`` (the producer's acknowledged
copy) and one file stream per event family (``MODEL``, ``INFERENCE``,
``TRAINING``) sourcing its family's subjects from it, as Synapse writes each
event to its family's topic stream. JetStream acknowledges a publish after the
write to the OS (fsync every 2 minutes, its default).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.workload import FAMILIES
from synapse import child
from synapse.child import free_port

AUDIT = "AUDIT"
INSTALL_HINT = (
    "nats-server is not installed; the pipeline phase runs NATS JetStream beside Synapse. "
    "Debian/Ubuntu: apt-get install nats-server (or run with --no-nats)"
)


def binary() -> str | None:
    return shutil.which("nats-server")


def family_streams() -> dict[str, str]:
    """Stream name -> the subjects it sources from AUDIT."""
    return {f.upper(): f"events.{f}.>" for f in FAMILIES}


@dataclass
class NatsServer:
    """One ``nats-server -js`` on 127.0.0.1, its store and config in ``folder``."""

    folder: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout_s: float = 15.0) -> NatsServer:
        found = binary()
        if found is None:
            raise RuntimeError(INSTALL_HINT)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        config = self.folder / "nats.conf"
        config.write_text(
            f'listen: "127.0.0.1:{self.port}"\n'
            f"max_payload: 1MB\n"
            f'jetstream {{\n  store_dir: "{self.folder / "store"}"\n'
            f"  max_mem: 256MB\n  max_file: 20GB\n}}\n"
        )
        log = self.folder / "nats.log"
        self.process = child.spawn([found, "-c", str(config)], log=log)
        ready = lambda: child.accepts(self.port) and asyncio.run(self._jetstream_ready())  # noqa: E731
        child.wait_ready(self.process, ready, name="nats-server", timeout_s=timeout_s, log=log)
        return self

    async def _jetstream_ready(self) -> bool:
        """Whether JetStream answers (its account info) on our port."""
        import nats

        try:
            nc = await nats.connect(
                self.url, connect_timeout=0.5, allow_reconnect=False, error_cb=_quiet
            )
            await nc.jetstream().account_info()
            await nc.close()
            return True
        except Exception:
            return False

    def stop(self, timeout_s: float = 10.0) -> None:
        child.stop(self.process, timeout_s)


async def _quiet(exc: Exception) -> None:
    """nats-py logs every failed connect; the start-up loop expects a few."""


async def create_topology(js: Any) -> None:
    """AUDIT on ``events.>``, and one stream per family sourcing from it (file storage)."""
    from nats.js.api import StorageType, StreamConfig, StreamSource

    await js.add_stream(StreamConfig(name=AUDIT, subjects=["events.>"], storage=StorageType.FILE))
    for name, subjects in family_streams().items():
        source = StreamSource(name=AUDIT, filter_subject=subjects)
        await js.add_stream(StreamConfig(name=name, sources=[source], storage=StorageType.FILE))


async def counts(js: Any) -> dict[str, int]:
    """Messages stored in each stream of the topology."""
    names = [AUDIT, *family_streams()]
    infos = await asyncio.gather(*(js.stream_info(n) for n in names))
    return {n: int(i.state.messages) for n, i in zip(names, infos, strict=True)}


async def stored_bytes(js: Any) -> dict[str, int]:
    names = [AUDIT, *family_streams()]
    infos = await asyncio.gather(*(js.stream_info(n) for n in names))
    return {n: int(i.state.bytes) for n, i in zip(names, infos, strict=True)}
