"""A local Valkey cluster for tests: primaries (+ replicas) from the bundled binary, free ports."""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from synapse.embedded import EmbeddedServer, free_port, server_binary


def cli_binary() -> str:
    """valkey-cli (or redis-cli) beside the server binary."""
    server = Path(server_binary())
    for name in ("valkey-cli", "redis-cli"):
        candidate = server.parent / name
        if candidate.exists():
            return str(candidate)
    raise RuntimeError(f"no valkey-cli next to {server}")


def _bus_port() -> int:
    """A free port for the cluster bus (set with cluster-port, not port+10000)."""
    return free_port()


@dataclass
class LocalCluster:
    """``primaries`` primaries and ``replicas`` replicas per primary on 127.0.0.1."""

    folder: Path
    primaries: int = 3
    replicas: int = 0
    node_timeout_ms: int = 1000
    nodes: list[EmbeddedServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        live = next(n for n in self.nodes if n.ping())
        return f"redis+cluster://127.0.0.1:{live.port}"

    def start(self) -> LocalCluster:
        total = self.primaries * (1 + self.replicas)
        for i in range(total):
            node = EmbeddedServer(
                data_dir=self.folder / f"node{i}",
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(self.node_timeout_ms),
                    "--cluster-port",
                    str(_bus_port()),
                    "--cluster-require-full-coverage",
                    "no",
                    "--cluster-replica-validity-factor",
                    "0",
                    "--cluster-allow-reads-when-down",
                    "no",
                ),
            )
            node.start()
            self.nodes.append(node)
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [
                cli_binary(),
                "--cluster",
                "create",
                *addrs,
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_ok()
        return self

    def client(self, node: EmbeddedServer) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2)

    def info(self, node: EmbeddedServer) -> dict[str, str]:
        with self.client(node) as c:
            text = c.execute_command("CLUSTER", "INFO")
        if isinstance(text, bytes):
            text = text.decode()
        return dict(line.split(":", 1) for line in str(text).splitlines() if ":" in line)

    def role(self, node: EmbeddedServer) -> str:
        with self.client(node) as c:
            return str(c.info("replication")["role"])

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every live node reports cluster_state:ok and agrees on the slot map."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                live = [n for n in self.nodes if n.ping()]
                states = [self.info(n) for n in live]
                if all(s.get("cluster_state") == "ok" for s in states) and all(
                    s.get("cluster_slots_ok") == "16384" for s in states
                ):
                    with self.client(live[0]) as c:
                        c.execute_command("PING")
                    if self._replicas_synced(live):
                        return
            except (redis.RedisError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("cluster did not reach cluster_state:ok")
            time.sleep(0.05)

    def _replicas_synced(self, live: list[EmbeddedServer]) -> bool:
        for node in live:
            with self.client(node) as c:
                info = c.info("replication")
            if info["role"] == "slave" and info.get("master_link_status") != "up":
                return False
        return True

    def primary_nodes(self) -> list[EmbeddedServer]:
        return [n for n in self.nodes if n.ping() and self.role(n) == "master"]

    def node_for(self, key: str) -> EmbeddedServer:
        """The live primary serving ``key``'s slot (as the cluster itself says)."""
        slot = redis.cluster.key_slot(key.encode())
        with self.client(self.primary_nodes()[0]) as c:
            ranges = c.execute_command("CLUSTER", "SLOTS")
        for first, last, primary, *_ in ranges:
            if first <= slot <= last:
                return next(n for n in self.nodes if n.port == int(primary[1]))
        raise AssertionError(f"no primary serves slot {slot}")

    def flush(self) -> None:
        for node in self.primary_nodes():
            with self.client(node) as c:
                c.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()
