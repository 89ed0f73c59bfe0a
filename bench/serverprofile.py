"""``python -m bench.profile --pipeline VARIANT``: one headline run, the server's side of it.

Runs one ``bench.pipeline`` throughput run (or, with ``--rate``, a paced one)
with AOF rewrites off (so the AOF's size is what the run appended) while
py-spy samples the router and, with
``--perf``, ``perf record`` samples the server. Prints, per event: the server's
CPU and the time INFO commandstats gives each command (a script's inner
XADD/XACK are counted both in their own line and in EVALSHA's), entries per
XREADGROUP and per commit (the batch sizes a running producer leaves the
router), AOF bytes, and the size of an entry and of each copy.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.pipeline import VARIANTS, Pipeline

REPORT = ("--sort", "symbol", "--percent-limit", "1.5", "-g", "none")


def main(
    args: argparse.Namespace, spy: str, results: Path, summarise: Callable[[str, int], str]
) -> int:
    variant = VARIANTS[args.pipeline]
    results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    stacks = results / f"profile-pipeline-{variant.name}-{stamp}.txt"
    perf_data = results / f"perf-{variant.name}-{stamp}.data"

    @contextlib.contextmanager
    def samplers(pids: dict[str, int]) -> Iterator[None]:
        cmd = [spy, "record", "--pid", str(pids["router"]), "--format", "raw", "-r", "250"]
        cmd += ["--nonblocking", "--output", str(stacks)]
        procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        if args.perf:
            perf = ["perf", "record", "-F", "499", "-g", "-p", str(pids["server"])]
            procs.append(
                subprocess.Popen(
                    [*perf, "-o", str(perf_data)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        time.sleep(1.0)  # samplers attach
        try:
            yield
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGINT)
                proc.wait(60)

    with tempfile.TemporaryDirectory(prefix="synapse-profile-") as tmp:
        p = Pipeline(Path(tmp), server_args=("--auto-aof-rewrite-percentage", "0"))
        p.around = samplers
        if args.rate:
            result = p.latency(variant, args.rate, args.events / args.rate)
        else:
            result = p.throughput(variant, args.events)
    print(report(result))
    print("\nrouter (py-spy, --nonblocking):")
    print(summarise(stacks.read_text(), args.top))
    print(f"\nstacks: {stacks}")
    if args.perf and shutil.which("perf"):
        top = subprocess.run(
            [*("perf", "report", "-i", str(perf_data), "--stdio", "--no-children"), *REPORT],
            capture_output=True,
            text=True,
        ).stdout
        lines = [x for x in top.splitlines() if x.strip() and not x.startswith("#")]
        print("\nserver (perf, own time by symbol):")
        print("\n".join(lines[:40]))
        print(f"\nperf data: {perf_data}")
    return 0


def report(r: dict[str, Any]) -> str:
    """The server's side of one run, per event."""
    n = r["events"]
    out = [
        f"{r['variant']}: {n:,} events, {r['events_per_s']:,.0f}/s (samplers attached); "
        f"CPU us/event server {r['server_us_per_event']:.1f}, "
        f"router {r['router_us_per_event']:.1f}, producer {r['producer_us_per_event']:.1f}",
        "",
        "| command | calls | us/call | calls/event | server us/event |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, c in r["commands"].items():
        if c["calls"]:
            out.append(
                f"| {name.upper()} | {c['calls']:,} | {c['usec'] / c['calls']:.2f} | "
                f"{c['calls'] / n:.3f} | {c['usec'] / n:.2f} |"
            )
    cmds = r["commands"]
    reads = cmds.get("xreadgroup", {}).get("calls", 0)
    commits = cmds.get("evalsha", {}).get("calls", 0)
    out += [
        "",
        f"entries per XREADGROUP {n / max(1, reads):.1f}, per commit {n / max(1, commits):.1f}",
        f"AOF bytes per event {r['aof_current_size'] / n:,.0f} (rewrites: {r['aof_rewrites']})",
        "entry bytes (field names + values): "
        + ", ".join(f"{s} {b}" for s, b in r["entry_bytes"].items()),
    ]
    return "\n".join(out)
