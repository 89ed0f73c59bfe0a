"""``python -m bench.profile``: where a Synapse router's time goes while it drains.

Starts a server, preloads events, runs the real router in a worker process and
samples it with py-spy (``pip install py-spy``; not a runtime dependency) for
the whole drain. Prints the top functions by own time and by inclusive time,
from py-spy's collapsed stacks, and writes the raw stacks beside the JSON
results (``bench/results/profile-*.txt``) for flame graphs.

``--kafka`` profiles the router on Kafka instead (one run of the ``kafka`` phase of
``bin/bench``, on tansu; ``--kind loop`` the hand-written loop).

``--pipeline VARIANT`` profiles one run of the headline instead (a producer
running, the AOF on, AOF rewrites off so its size per event is exact): the
server's own figures (``bench.serverprofile``: INFO commandstats per call and
per event, entries per XREADGROUP and per commit, AOF and entry bytes), the
router under py-spy and, with ``--perf``, the server under ``perf record``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bench.phases import Bench
from bench.proc import Pinning, pin
from bench.workload import write_table
from synapse.embedded import EmbeddedServer

RESULTS = Path(__file__).resolve().parent / "results"


def summarise(collapsed: str, top: int) -> str:
    """Top frames by own and inclusive share of samples, from ``a;b;c N`` lines."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return "no samples"
    out = [f"{total} samples", "", "own time:"]
    out += [f"  {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    out += ["", "inclusive time:"]
    out += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(out)


def _short(frame: str) -> str:
    """``func (path/to/module.py:12)`` -> ``func (module.py)``: lines split one function."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1].rstrip(")")
    return f"{name} ({file})" if file else name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument("--events", type=int, default=300_000)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--kind", default="synapse", choices=["synapse", "baseline", "loop"])
    p.add_argument("--kafka", action="store_true", help="the router on Kafka (tansu)")
    p.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    p.add_argument("--pipeline", metavar="VARIANT", help="profile a pipeline run of VARIANT")
    p.add_argument("--perf", action="store_true", help="with --pipeline: perf record the server")
    p.add_argument("--rate", type=int, default=0, help="with --pipeline: pace the producer")
    args = p.parse_args(argv)
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    if args.pipeline:
        from bench import serverprofile

        return serverprofile.main(args, spy, RESULTS, summarise)
    pinning = Pinning.choose(True)
    pin(os.getpid(), pinning.driver)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / time.strftime(f"profile-{args.kind}-%Y%m%d-%H%M%S.txt")
    if args.kafka:
        return _kafka(args, spy, out, pinning)
    with tempfile.TemporaryDirectory(prefix="synapse-profile-") as tmp:
        folder = Path(tmp)
        server = EmbeddedServer(folder / "server", extra_args=("--appendonly", "no")).start()
        try:
            b = Bench(server, write_table(folder / "table"), 2, 500, pinning)
            last = b.fresh(args.events)
            pin(b.server_pid, pinning.server)
            worker = b.worker(args.kind, "profiled")
            cmd = [spy, "record", "--pid", str(worker.pid), "--format", "raw", "-r", "250"]
            cmd += ["--output", str(out), *(["--native"] if args.native else [])]
            recorder = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # py-spy attaches
            started = time.perf_counter()
            worker.go()
            b.wait_drained(last, timeout_s=600)
            wall = time.perf_counter() - started
            recorder.send_signal(signal.SIGINT)
            recorder.wait(30)
            worker.stop()
            b.r.close()
        finally:
            server.stop()
    print(f"{args.kind}: {args.events:,} events in {wall:.2f}s ({args.events / wall:,.0f}/s)")
    print("(waiting in the event loop shows as select/poll/run_once frames)\n")
    print(summarise(out.read_text(), args.top))
    print(f"\nstacks: {out}")
    return 0


def _kafka(args: argparse.Namespace, spy: str, out: Path, pinning: Pinning) -> int:
    """One run of the kafka phase's ``--kind`` with py-spy on the worker."""
    from bench import kafkaphase

    def attach(pid: int) -> Callable[[], None]:
        cmd = [spy, "record", "--pid", str(pid), "--format", "raw", "-r", "250"]
        cmd += ["--output", str(out), *(["--native"] if args.native else [])]
        recorder = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # py-spy attaches

        def detach() -> None:
            recorder.send_signal(signal.SIGINT)
            recorder.wait(30)

        return detach

    with tempfile.TemporaryDirectory(prefix="synapse-profile-") as tmp:
        run = kafkaphase.drain(Path(tmp), args.kind, args.events, 500, pinning, attach)
    print(f"kafka {args.kind}: {run['records_per_s']:,.0f} records/s (after the first commit)")
    print("(the group join is sampled too: waiting shows as select/poll/run_once frames)\n")
    print(summarise(out.read_text(), args.top))
    print(f"\nstacks: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
