"""Subscriber reliability with real processes: kill -9, sharing, SIGTERM, Redis restarts."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from synapse.embedded import EmbeddedServer
from tests.client.procs import Program
from tests.conftest import ROOT, wait_sync

pytestmark = pytest.mark.slow

Worker = Callable[..., Program]


@pytest.fixture
def workers(url: str, tmp_path: Path) -> Iterator[Worker]:
    """Start worker processes (tests/client/worker.py); any left running are killed."""
    made: list[Program] = []

    def start(*args: str, service: str = "svc", on: str | None = None) -> Program:
        log = tmp_path / f"worker-{len(made)}.log"
        argv = ["-m", "tests.client.worker", "--service", service, "--stream", "jobs"]
        argv += ["--ledger", str(tmp_path / f"{service}.ledger"), *args]
        proc = Program(argv, on or url, log, ROOT)
        made.append(proc)
        proc.wait_for("ready")
        return proc

    yield start
    for proc in made:
        proc.kill()


def ledger(tmp_path: Path, service: str = "svc") -> list[tuple[str, str, str, int, int]]:
    """(kind, n, entry id, pid, deliveries) per line of a service's ledger."""
    path = tmp_path / f"{service}.ledger"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        kind, n, entry, pid, deliveries = line.split()
        rows.append((kind, n, entry, int(pid), int(deliveries)))
    return rows


def done(tmp_path: Path, service: str = "svc") -> Counter[str]:
    """How many times each event (its n) was handled to the end."""
    return Counter(n for kind, n, *_ in ledger(tmp_path, service) if kind == "done")


def publish(
    r: redis.Redis, ns: range, *, fail: frozenset[int] = frozenset(), stream: str = "jobs"
) -> None:
    """XADD one event per n (event id ``e<n>``), pipelined."""
    pipe = r.pipeline(transaction=False)
    for n in ns:
        body = {"n": n, **({"fail": True} if n in fail else {})}
        pipe.xadd(stream, {"type": "job.run", "data": json.dumps(body), "id": f"e{n}"})
        if len(pipe) >= 1000:
            pipe.execute()
    pipe.execute()


def settled(r: redis.Redis, group: str = "svc", stream: str = "jobs") -> bool:
    """Nothing pending and nothing unread in the group."""
    for info in r.xinfo_groups(stream):
        if info["name"] == group.encode():
            return int(info["pending"]) == 0 and int(info["lag"] or 0) == 0
    return False


def test_kill_9_mid_stream_loses_nothing_and_dedupe_handles_once(
    workers: Worker, r: redis.Redis, tmp_path: Path
) -> None:
    """kill -9 mid 20k events, start another: none lost; duplicates only from in-flight work."""
    total = 20_000
    first = workers("--dedupe-s", "600")
    publish(r, range(total))
    publish(r, range(0, total, 20))  # 1000 retried publishes: the same event ids again
    wait_sync(lambda: len(done(tmp_path)) >= 5000, timeout_s=60)
    first.kill()
    in_flight = {e["message_id"] for e in r.xpending_range("jobs", "svc", "-", "+", 100_000)}
    second = workers("--dedupe-s", "600")
    wait_sync(lambda: settled(r) and len(done(tmp_path)) == total, timeout_s=90)
    counts = done(tmp_path)
    assert set(counts) == {str(n) for n in range(total)}  # lost: 0
    twice = {n for n, c in counts.items() if c > 1}
    # An event is handled again only if the kill came between its handler's return and
    # its mark + ack (the entry was still pending): a dedupe mark, once written, holds.
    pending_n = {n for kind, n, entry, *_ in ledger(tmp_path) if entry.encode() in in_flight}
    assert twice <= pending_n, sorted(twice - pending_n)[:10]
    assert len(twice) <= 16  # at most `concurrency`: each worker waits for its mark
    assert second.stop() == 0


def test_two_instances_share_the_work(workers: Worker, r: redis.Redis, tmp_path: Path) -> None:
    """Two instances of one service split the events; none is handled by both."""
    one = workers()
    two = workers()
    publish(r, range(4000))
    wait_sync(lambda: settled(r) and len(done(tmp_path)) == 4000, timeout_s=60)
    rows = [row for row in ledger(tmp_path) if row[0] == "done"]
    assert all(c == 1 for c in done(tmp_path).values())
    by_pid = Counter(pid for *_, pid, _ in rows)
    assert set(by_pid) == {one.pid, two.pid} and min(by_pid.values()) > 0
    assert one.stop() == 0 and two.stop() == 0


def test_sigterm_finishes_handlers_in_flight(
    workers: Worker, r: redis.Redis, tmp_path: Path
) -> None:
    """SIGTERM while handlers sleep: they finish, their events are acked, exit code 0."""
    proc = workers("--sleep-ms", "800", "--concurrency", "4")
    publish(r, range(4))
    wait_sync(lambda: sum(1 for row in ledger(tmp_path) if row[0] == "start") == 4)
    assert proc.stop() == 0
    assert set(done(tmp_path)) == {"0", "1", "2", "3"}
    assert settled(r)


def test_failing_handler_is_dead_lettered_while_the_rest_flow(
    workers: Worker, r: redis.Redis, tmp_path: Path
) -> None:
    """A raising handler: retried with backoff up to max_deliveries, then dead-lettered."""
    proc = workers("--max-deliveries", "3", "--retry-backoff-s", "0.2")
    publish(r, range(3000), fail=frozenset({7, 1500}))
    wait_sync(lambda: settled(r) and r.exists("synapse:dlq") and r.xlen("synapse:dlq") == 2)
    counts = done(tmp_path)
    assert set(counts) == {str(n) for n in range(3000)} - {"7", "1500"}
    attempts = [row[4] for row in ledger(tmp_path) if row[0] == "start" and row[1] == "7"]
    assert attempts == [1, 2, 3]
    letters = [fields for _, fields in r.xrange("synapse:dlq")]
    assert {json.loads(f[b"data"])["n"] for f in letters} == {7, 1500}
    assert all(f[b"synapse-reason"] == b"handler_error" for f in letters)
    assert all(f[b"synapse-consumer"] == b"svc" for f in letters)
    assert proc.stop() == 0


def test_redis_restart_under_a_subscriber(workers: Worker, tmp_path: Path) -> None:
    """The server restarts (AOF kept) under a running subscriber: it carries on by itself."""
    srv = EmbeddedServer(data_dir=tmp_path / "redis", appendfsync="always").start()
    client = redis.Redis.from_url(srv.url)
    try:
        proc = workers(on=srv.url)
        publish(client, range(100))
        wait_sync(lambda: len(done(tmp_path)) == 100)
        srv.stop()
        srv.start()
        publish(client, range(100, 200))
        wait_sync(lambda: len(done(tmp_path)) == 200, timeout_s=60)
        wait_sync(lambda: settled(client))
        assert "redis_unavailable" in proc.output()
        assert proc.stop() == 0
    finally:
        client.close()
        srv.stop()


def test_second_sigterm_exits_at_once(workers: Worker, r: redis.Redis, tmp_path: Path) -> None:
    """A second SIGTERM while a slow handler drains: exit at once (128 + 15)."""
    import os
    import signal
    import time

    proc = workers("--sleep-ms", "20000", "--concurrency", "1")
    publish(r, range(1))
    wait_sync(lambda: any(row[0] == "start" for row in ledger(tmp_path)))
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait_for("stopping")
    started = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.process.wait(10) == 128 + signal.SIGTERM
    assert time.monotonic() - started < 5
    assert r.xpending("jobs", "svc")["pending"] == 1  # not handled: still pending, not lost


def test_slow_handlers_keep_their_entries(workers: Worker, r: redis.Redis, tmp_path: Path) -> None:
    """Entries held longer than claim_idle_ms by a live, slow instance are not reclaimed."""
    publish(r, range(4))  # before it starts: its first read takes all 4 (2.8 s of handling)
    slow = workers("--sleep-ms", "700", "--concurrency", "1", "--claim-idle-ms", "400")
    wait_sync(lambda: any(row[0] == "start" for row in ledger(tmp_path)))
    other = workers("--claim-idle-ms", "400")
    wait_sync(lambda: settled(r) and len(done(tmp_path)) == 4, timeout_s=30)
    assert all(c == 1 for c in done(tmp_path).values())
    assert {pid for *_, pid, _ in ledger(tmp_path)} == {slow.pid}
    assert slow.stop() == 0 and other.stop() == 0


def test_redrive_reaches_only_that_service(
    workers: Worker, r: redis.Redis, tmp_path: Path, url: str
) -> None:
    """A handler dead letter redriven goes to that service's retry stream, no other group."""
    import subprocess
    import sys

    flag = tmp_path / "failing"
    flag.touch()
    failing = workers("--max-deliveries", "2", "--retry-backoff-s", "0.05",
                      "--fail-while", str(flag))  # fmt: skip
    other = workers("--fail-while", str(tmp_path / "never"), service="other")
    publish(r, range(100), fail=frozenset({7}))
    wait_sync(lambda: r.exists("synapse:dlq") == 1 and settled(r) and settled(r, "other"))
    assert "7" not in done(tmp_path) and done(tmp_path, "other")["7"] == 1
    flag.unlink()
    synapse = str(Path(sys.executable).parent / "synapse")
    env = {"SYNAPSE_REDIS_URL": url, "PATH": "/usr/bin:/bin"}
    ran = subprocess.run(
        [synapse, "dlq", "redrive", "--json"], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    wait_sync(lambda: done(tmp_path)["7"] == 1 and settled(r, stream="synapse:retry:svc"))
    assert r.xlen("synapse:dlq") == 0 and r.xlen("jobs") == 100  # nothing went back to jobs
    assert done(tmp_path, "other")["7"] == 1  # the other service never saw it again
    assert failing.stop() == 0 and other.stop() == 0
