"""The ``kafka`` phase of ``bin/bench``: Synapse's router on Kafka beside a hand-written loop.

Issue 14's speed requirement: Synapse on Kafka against a hand-written loop with
the same client library (``bench/kafkaloop.py``: consume, produce two copies
with ``acks=all``, commit; no validation), ratio >= 0.8 with validation on. Four
variants: the router as ``synapse-router`` runs it (``bench.worker synapse`` on
the bench table, every event validated, two copies: its family's topic and
``all-events``), the same router on the table without schemas, the loop, and the
*floor*: the same loop doing the least a router in Python must do on this table
(``kafkaloop.floor_copies``: parse, validate, route by type, provenance headers;
no held records, retries, dead letters or metrics). The floor says how much of
the gap to the loop is the work itself rather than the router's way of doing it.

Each run: a fresh tansu broker (memory storage) in a folder of its own, the
source (``ingress``, 3 partitions) and every destination created with 3
partitions, ``count`` ~320-byte records preloaded (header ``type`` and
``producer``, JSON value, 64 keys), then the worker process started and told
to go. The clock and the CPU readings (psutil, per pid: the worker, the broker)
start when the group's first commit is seen and stop when the committed
offsets reach the preloaded ends (exact: taken from the producer's delivery
reports, since tansu's end offsets under-report): the group join (seconds on
tansu) and the router's set-up are not the workload. Every run is checked by
consuming the destinations back (never by end offsets): each holds every
record once, nothing dead-lettered. Variants interleaved, order rotated per
repetition; medians.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bench.kafkaloop import COPIES
from bench.proc import Pinning, Worker, cpu_s, pin
from bench.workload import FAMILIES, GROUP, SOURCE, events, per_family, write_table
from synapse.tansu import TansuBroker, tansu_binary

VARIANTS = ("synapse", "synapse-novalidate", "loop", "floor")
LABELS = {
    "synapse": "synapse (validation on)",
    "synapse-novalidate": "synapse (validation off)",
    "loop": "hand-written loop (no validation)",
    "floor": "hand-written loop doing the router's least work (validation on)",
}
PARTITIONS = 3
KEYS = 64
AUDIT = "all-events"
DEAD_LETTER = "synapse.dlq"
POLL_S = 0.005


def write_kafka_table(folder: Path, batch: int, validate: bool) -> Path:
    """The bench table (fan-out 2: the family's topic and ``all-events``), without its
    ``schemas:`` section when not ``validate``."""
    path = write_table(folder, batch=batch, fanout=2)
    if not validate:
        text = path.read_text()
        path.write_text(text[: text.index("schemas:")] + text[text.index("routes:") :])
    return path


def expected(kind: str, count: int) -> dict[str, int]:
    """What each destination of ``kind`` must hold after ``count`` records."""
    if kind == "loop":
        return dict.fromkeys(COPIES, count)
    families = per_family(count)
    return {
        **{f"{f}-events": families[f] for f in FAMILIES},
        AUDIT: count,
        DEAD_LETTER: 0,
    }


def create_topics(bootstrap: str, names: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    for future in futures.values():
        future.result(30)


def preload(bootstrap: str, count: int) -> dict[int, int]:
    """``count`` records in the source (acks=all); per partition, the offset after its last
    record, from the delivery reports."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "enable.idempotence": False}
    )
    ends: dict[int, int] = {}
    errors: list[str] = []

    def done(err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)

    for n, f in enumerate(events(count)):
        headers: list[tuple[str, str | bytes | None]] = [
            (f[0].decode(), f[1]),
            (f[4].decode(), f[5]),
        ]
        while True:
            try:
                producer.produce(
                    SOURCE, f[3], key=b"%d" % (n % KEYS), headers=headers, on_delivery=done
                )
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60) != 0 or errors or sum(ends.values()) != count:
        raise RuntimeError(f"preload: {sum(ends.values())} of {count} stored, {errors[:3]}")
    return ends


def committed(watcher: Consumer, ends: dict[int, int]) -> int:
    """Records the group has committed (offsets start at 0; none yet counts 0)."""
    tps = watcher.committed([TopicPartition(SOURCE, p) for p in ends], timeout=10)
    return sum(max(0, tp.offset) for tp in tps)


def stored(bootstrap: str, topic: str, want: int, timeout_s: float = 60.0) -> tuple[int, int]:
    """(records, distinct values) of ``topic``, consumed from the start until at least
    ``want`` came and a fetch comes back empty."""
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-count"})
    try:
        meta = reader.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None:
            return 0, 0
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        count, values = 0, set()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = reader.consume(5000, 0.5)
            for m in batch:
                if m.error() is None:
                    count += 1
                    values.add(m.value())
            if count >= want and not batch:
                break
        return count, len(values)
    finally:
        reader.close()


def check(kind: str, copies: dict[str, tuple[int, int]], count: int) -> None:
    """Every destination holds each of its records once (the loop: every record in both;
    Synapse: its family's topic and ``all-events``), nothing dead-lettered."""
    want = {t: (n, n) for t, n in expected(kind, count).items()}
    if copies != want:
        raise RuntimeError(f"kafka {kind}: stored (records, distinct) {copies}, expected {want}")


def worker(
    kind: str, url: str, folder: Path, batch: int, cpus: set[int] | None, code: Path | None
) -> Worker:
    if kind == "loop":
        return Worker(["kafkaloop", url, "bench-loop", str(batch)], cpus)
    if kind == "floor":
        table = write_kafka_table(folder / "table", batch, validate=True)
        return Worker(["kafkaloop", url, "bench-loop", str(batch), str(table)], cpus)
    table = write_kafka_table(folder / "table", batch, validate=kind == "synapse")
    return Worker(["synapse", url, "bench-router", str(table)], cpus, cwd=code)


def drain(
    folder: Path,
    kind: str,
    count: int,
    batch: int,
    pinning: Pinning,
    attach: Callable[[int], Callable[[], None]] | None = None,
    code: Path | None = None,
) -> dict[str, Any]:
    """One run of ``kind`` on a fresh broker: ``count`` preloaded records drained and checked.
    ``attach``: called with the worker's pid before it starts (a profiler); what it returns
    is called once the group has committed everything. ``code``: the worker runs the
    ``synapse`` package found there (an A/B against another revision, ``bench.kafkaab``)."""
    with TansuBroker(log_dir=folder) as broker:
        assert broker.process is not None
        broker_pid = broker.process.pid
        pin(broker_pid, pinning.server)
        want = expected(kind, count)
        create_topics(broker.bootstrap, [SOURCE, *want])
        ends = preload(broker.bootstrap, count)
        watcher = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": GROUP})
        w = worker(kind, broker.url, folder, batch, pinning.routers, code)
        detach = attach(w.pid) if attach is not None else None
        try:
            started = time.perf_counter()
            w.go()
            first: tuple[float, int, float, float] | None = None
            deadline = started + 60 + count / 1000
            while True:
                done = committed(watcher, ends)
                now = time.perf_counter()
                if first is None and done > 0:
                    first = (now, done, w.cpu_s(), cpu_s(broker_pid))
                if done >= count:
                    router_s, broker_s = w.cpu_s(), cpu_s(broker_pid)
                    if detach is not None:
                        detach()
                    break
                if now > deadline:
                    raise RuntimeError(f"kafka {kind}: {done} of {count} committed in time")
                time.sleep(POLL_S)
        finally:
            w.stop()
            watcher.close()
        assert first is not None
        t1, c1, router1, broker1 = first
        if c1 >= count:
            raise RuntimeError(f"kafka {kind}: drained at the first commit; use more records")
        copies = {t: stored(broker.bootstrap, t, n) for t, n in want.items()}
    check(kind, copies, count)
    measured = count - c1
    seconds = now - t1
    return {
        "kind": kind,
        "records": count,
        "measured_records": measured,
        "seconds": seconds,
        "join_s": t1 - started,
        "records_per_s": measured / seconds,
        "router_us_per_record": (router_s - router1) / measured * 1e6,
        "broker_us_per_record": (broker_s - broker1) / measured * 1e6,
        "copies": {t: n for t, (n, _) in copies.items()},
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("records_per_s", "router_us_per_record", "broker_us_per_record")
    return {**{k: statistics.median(r[k] for r in runs) for k in keys}, "runs": runs}


def run(folder: Path, count: int, reps: int, batch: int, pinning: Pinning) -> dict[str, Any]:
    """Every variant ``reps`` times, interleaved, the order rotated per repetition."""
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for rep in range(reps):
        for kind in VARIANTS[rep % len(VARIANTS) :] + VARIANTS[: rep % len(VARIANTS)]:
            runs[kind].append(drain(folder / f"{kind}-{rep}", kind, count, batch, pinning))
            print(
                f"bench: kafka {kind} rep {rep + 1}: {runs[kind][-1]['records_per_s']:,.0f}/s",
                file=sys.stderr,
                flush=True,
            )
    variants = {k: median_of(v) for k, v in runs.items()}
    loop = variants["loop"]["records_per_s"]
    return {
        "records": count,
        "reps": reps,
        "batch": batch,
        "partitions": PARTITIONS,
        "versions": versions(),
        "variants": variants,
        "ratio": variants["synapse"]["records_per_s"] / loop,
        "ratio_novalidate": variants["synapse-novalidate"]["records_per_s"] / loop,
        "ratio_floor": variants["synapse"]["records_per_s"] / variants["floor"]["records_per_s"],
    }


def versions() -> dict[str, str]:
    import confluent_kafka

    tansu = subprocess.run([tansu_binary(), "--version"], capture_output=True, text=True)
    return {
        "confluent-kafka": str(confluent_kafka.__version__),
        "librdkafka": confluent_kafka.libversion()[0],
        "tansu": (tansu.stdout or tansu.stderr).strip(),
    }


def report(result: dict[str, Any]) -> list[str]:
    """The phase's table for humans."""
    lines = [
        f"kafka: {result['records']:,} records x {result['reps']} reps, {result['partitions']} "
        f"partitions, batch {result['batch']}, fan-out 2, tansu; {result['versions']}",
        "| variant | records/s | router CPU us/record | broker CPU us/record | vs loop "
        "| vs floor |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    loop = result["variants"]["loop"]["records_per_s"]
    floor = result["variants"]["floor"]["records_per_s"]
    for kind in VARIANTS:
        v = result["variants"][kind]
        lines.append(
            f"| {LABELS[kind]} | {v['records_per_s']:,.0f} | {v['router_us_per_record']:.1f} | "
            f"{v['broker_us_per_record']:.1f} | {v['records_per_s'] / loop:.2f} "
            f"| {v['records_per_s'] / floor:.2f} |"
        )
    lines.append(
        f"ratio synapse / loop (kafka, medians): {result['ratio']:.2f} "
        f"(validation off: {result['ratio_novalidate']:.2f}); synapse / floor: "
        f"{result['ratio_floor']:.2f}"
    )
    return lines
