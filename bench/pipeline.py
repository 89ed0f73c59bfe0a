"""The headline: end to end, durable, a producer running, Synapse beside NATS JetStream.

One throughput run: a fresh server (Valkey with the AOF as configured, or
``nats-server -js``) in a folder of its own, the Synapse router already
waiting (``bench.worker``), then a producer process (``bench.producer``)
publishing ``count`` events as fast as its acknowledgements allow. The clock
runs from the producer's start until every copy is stored: the routed copies
(Synapse) or the per-family stream copies (NATS). CPU seconds of the server,
the router and the producer are read with psutil at that moment. Every copy is
then counted per stream against the workload, so a run that lost or doubled
an event fails instead of winning.

A latency run offers a fixed rate (half the peak measured in the same run) and
reads back, in this process, the copies of one family (``SAMPLED``, a quarter of
the events, spread evenly over the run): publish-to-copy percentiles. Reading
every copy back would cost the 2-core machine more than the routing does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench import natsjs, readings
from bench.proc import Worker
from bench.producer import NATS_TS
from bench.workload import GROUP, SOURCE, audit_streams, per_family, write_table
from synapse import allocator
from synapse.embedded import EmbeddedServer
from synapse.keys import DEFAULT_DEAD_LETTER

WINDOW = 1000  # unacknowledged publishes a producer keeps in flight
SAMPLED = "training"  # the family whose copies latency runs read back


@dataclass(frozen=True, slots=True)
class Variant:
    """One system under test: NATS JetStream, or Synapse at a fan-out and an AOF fsync policy,
    on the default server (the bundled Valkey with the allocator ``synapse.allocator`` picks)
    or with ``malloc`` forced (``SYNAPSE_SERVER_MALLOC``: libc, jemalloc, mimalloc); its
    producer writes bare pipelined XADDs (``redis``: the same event NATS gets) or goes
    through the client library (``bus``: ``Bus.publish_many``, CloudEvents envelope)."""

    name: str
    system: str
    fanout: int = 1
    appendfsync: str = ""
    malloc: str = ""
    producer: str = "redis"

    @property
    def server_env(self) -> dict[str, str]:
        return {allocator.ENV: self.malloc} if self.malloc else {}

    @property
    def stored_copies(self) -> int:
        """Copies of each event kept: NATS AUDIT + family; Synapse's source + its routed copies."""
        return 2 if self.system == "nats" else 1 + self.fanout

    @property
    def durability(self) -> str:
        if self.system == "nats":
            return "ack after write to OS"
        return "fsync before reply" if self.appendfsync == "always" else "AOF everysec"

    @property
    def label(self) -> str:
        if self.system == "nats":
            return "NATS JetStream (AUDIT + per-family streams sourcing it; producer validates)"
        routed = (
            "ingress kept as audit copy + 1 routed copy"
            if self.fanout == 1
            else (f"{self.fanout} routed copies")
        )
        client = ", producer on Bus.publish_many" if self.producer == "bus" else ""
        return f"Synapse, {routed}, AOF {self.appendfsync}{client}"


VARIANTS = {
    v.name: v
    for v in (
        Variant("nats", "nats"),
        Variant("synapse-fo1-everysec", "synapse", 1, "everysec"),
        Variant("synapse-fo2-everysec", "synapse", 2, "everysec"),
        Variant("synapse-fo1-always", "synapse", 1, "always"),
        Variant("synapse-fo2-always", "synapse", 2, "always"),
        # the producer through synapse.client (envelope, per-chunk round trips)
        Variant("synapse-fo1-everysec-bus", "synapse", 1, "everysec", producer="bus"),
        # what a machine without the system's jemalloc runs (the cmeel-mimalloc wheel)
        Variant("synapse-fo1-everysec-mimalloc", "synapse", 1, "everysec", malloc="mimalloc"),
        # the bundled Valkey as built (libc malloc): the default before synapse.allocator
        Variant("synapse-fo1-everysec-libc", "synapse", 1, "everysec", malloc="libc"),
    )
}


@dataclass
class Pipeline:
    """Runs of the pipeline phase, each in a fresh folder under ``folder``."""

    folder: Path
    batch: int = 500
    maxlen: int = 0  # retention on every destination (bench.ab)
    linger_ms: int | None = None  # the router's linger_ms (None: its default)
    #: Synapse's producer at full speed, instead of the variant's: ``bus`` (Bus.publish_many)
    #: or ``redis`` (bare XADD); paced runs and unix sockets always use ``redis``
    producer: str | None = None
    window: int = WINDOW
    timeout_s: float = 300.0
    runs: int = 0
    #: extra server arguments (bench.profile turns AOF rewrites off to size the AOF)
    server_args: tuple[str, ...] = ()
    #: router and producer on the server's unix socket instead of TCP (bench.ab)
    unix_socket: bool = False
    #: environment for the server process only (bench.ab: SYNAPSE_SERVER_MALLOC, SYNAPSE_SERVER)
    server_env: dict[str, str] | None = None
    #: wraps the measured part of a run, given the pids (bench.profile's samplers)
    around: Callable[[dict[str, int]], AbstractContextManager[Any]] | None = None

    def _fresh(self, variant: Variant) -> Path:
        self.runs += 1
        return self.folder / f"{self.runs:03d}-{variant.name}"

    def throughput(self, variant: Variant, count: int) -> dict[str, Any]:
        """Publish ``count`` events flat out; wall time and CPU until every copy is stored."""
        if variant.system == "nats":
            return self._nats(variant, count, rate=0)
        return self._synapse(variant, count, rate=0)

    def latency(self, variant: Variant, rate: int, duration_s: float) -> dict[str, Any]:
        """Offer ``rate`` events/s for ``duration_s``: publish-to-copy percentiles (ms)."""
        count = max(1, int(rate * duration_s))
        if variant.system == "nats":
            return self._nats(variant, count, rate=rate)
        return self._synapse(variant, count, rate=rate)

    def _producer(self, kind: str, address: str, count: int, rate: int) -> Worker:
        args = [kind, address, str(count), str(rate), str(self.window)]
        return Worker(args, module="bench.producer")

    def _synapse(self, variant: Variant, count: int, rate: int) -> dict[str, Any]:
        folder = self._fresh(variant)
        table = write_table(
            folder / "table",
            batch=self.batch,
            fanout=variant.fanout,
            maxlen=self.maxlen,
            linger_ms=self.linger_ms,
        )
        unix = folder / "server" / "redis.sock"
        extra = ("--unixsocket", str(unix), "--unixsocketperm", "700") if self.unix_socket else ()
        with readings.environ({**variant.server_env, **(self.server_env or {})}):
            server = EmbeddedServer(
                folder / "server",
                appendfsync=variant.appendfsync,
                extra_args=(*self.server_args, *extra),
            ).start()
        url, address = server.url, str(server.port)
        if self.unix_socket:
            url, address = f"unix://{unix}", str(unix)
        assert server.process is not None
        r = redis.Redis(port=server.port)
        r.xgroup_create(SOURCE, GROUP, "0", mkstream=True)
        family = per_family(count)
        want = {f"{f}-events": n for f, n in family.items()}
        want.update({s: count for s in audit_streams(variant.fanout)})
        router = producer = None
        try:
            router = Worker(["synapse", url, "router", str(table)])
            chosen = self.producer or variant.producer
            bus = chosen == "bus" and not rate and not self.unix_socket
            kind, at = ("bus", url) if bus else ("redis", address)
            producer = self._producer(kind, at, count, rate)
            pids = {"server": server.process.pid, "router": router.pid, "producer": producer.pid}
            cpu0 = readings.cpu(pids)
            r.config_resetstat()
            router.go()
            sampling = self.around(pids) if self.around else contextlib.nullcontext()
            with sampling:
                measured = self._measure(r, producer, want, count, rate)
            cpu = readings.delta(cpu0, readings.cpu(pids))
            got = readings.xlens(r, {SOURCE: count, DEFAULT_DEAD_LETTER: 0, **want})
            pending = r.xpending(SOURCE, GROUP)["pending"]
            stats = readings.server_stats(r)
            stats["entry_bytes"] = {s: readings.entry_bytes(r, s) for s in (SOURCE, *want)}
            stats["allocator"] = server.allocator
        finally:
            for w in (producer, router):
                if w is not None:
                    w.stop()
            r.close()
            server.stop()
        if self.maxlen:  # trimmed: every copy was written once (XADD calls), none kept past the cap
            xadds = stats["commands"]["xadd"]["calls"]
            if xadds != count * (1 + variant.fanout) or pending or got[DEFAULT_DEAD_LETTER]:
                raise RuntimeError(f"{variant.name}: {xadds} XADDs, pending {pending}, {got}")
        else:
            want = {SOURCE: count, DEFAULT_DEAD_LETTER: 0, **want}
            readings.check(variant.name, got, want, pending)
        return readings.result(
            variant.name, variant.stored_copies, count, rate, measured, cpu, got, stats
        )

    def _measure(
        self,
        r: redis.Redis,
        producer: Worker,
        want: dict[str, int],
        count: int,
        rate: int,
    ) -> dict[str, Any]:
        if rate:
            port = r.connection_pool.connection_kwargs["port"]
            family = per_family(count)[SAMPLED]
            stream = f"{SAMPLED}-events"
            read = readings.read_back(port, stream, producer, count, family, self.timeout_s)
            return asyncio.run(read)
        started = time.perf_counter()
        producer.go()
        readings.wait_done(producer, count, self.timeout_s)
        if self.maxlen:  # copies are trimmed: done when the group has committed everything
            readings.until(lambda: readings.group_done(r, count), self.timeout_s)
        else:
            readings.until(
                lambda: sum(readings.xlens(r, want).values()) == sum(want.values()),
                self.timeout_s,
            )
        return {"seconds": time.perf_counter() - started}

    def _nats(self, variant: Variant, count: int, rate: int) -> dict[str, Any]:
        folder = self._fresh(variant)
        server = natsjs.NatsServer(folder / "nats").start()
        family = per_family(count)
        want = {natsjs.AUDIT: count, **{f.upper(): n for f, n in family.items()}}
        producer = None
        try:
            producer = self._producer("nats", server.url, count, rate)
            measured, got, stats, cpu = asyncio.run(_nats_run(server, producer, want, rate, self))
        finally:
            if producer is not None:
                producer.stop()
            server.stop()
        readings.check(variant.name, got, want, 0)
        return readings.result(
            variant.name, variant.stored_copies, count, rate, measured, cpu, got, stats
        )


async def _nats_run(
    server: natsjs.NatsServer, producer: Worker, want: dict[str, int], rate: int, p: Pipeline
) -> tuple[dict[str, Any], dict[str, int], dict[str, Any], dict[str, float]]:
    import nats

    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await natsjs.create_topology(js)
    pids = {"server": server.pid, "producer": producer.pid}
    arrivals: list[tuple[int, int]] = []
    total = sum(n for s, n in want.items() if s != natsjs.AUDIT)
    sampled = want[SAMPLED.upper()]
    all_in = asyncio.Event()
    subs = []
    if rate:

        async def on_copy(msg: Any) -> None:
            arrivals.append((int(msg.headers[NATS_TS]), time.time_ns()))
            if len(arrivals) >= sampled:
                all_in.set()

        name = SAMPLED.upper()
        subjects = natsjs.family_streams()[name]
        subs.append(await js.subscribe(subjects, stream=name, ordered_consumer=True, cb=on_copy))
    loop = asyncio.get_running_loop()
    cpu0 = readings.cpu(pids)
    started = time.perf_counter()
    producer.go()
    await loop.run_in_executor(None, readings.wait_done, producer, want[natsjs.AUDIT], p.timeout_s)
    deadline = time.monotonic() + p.timeout_s
    while sum(v for s, v in (await natsjs.counts(js)).items() if s != natsjs.AUDIT) < total:
        if time.monotonic() > deadline:
            raise RuntimeError(f"nats: copies not stored within {p.timeout_s}s")
        await asyncio.sleep(0.005)
    seconds = time.perf_counter() - started
    if rate:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), max(0.0, deadline - time.monotonic()))
    cpu = readings.delta(cpu0, readings.cpu(pids))
    got = await natsjs.counts(js)
    stats = {"stored_bytes": await natsjs.stored_bytes(js)}
    for sub in subs:
        await sub.unsubscribe()
    await nc.close()
    measured: dict[str, Any] = {"seconds": seconds}
    if rate:
        measured.update(readings.percentiles(arrivals, sampled))
    return measured, got, stats, cpu
