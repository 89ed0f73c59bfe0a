"""``bin/bench``: Synapse end to end beside NATS JetStream, then its router beside a minimal loop.

The headline (``pipeline``): a producer publishing while the router routes, the
AOF on (everysec, always), fan-out 1 and 2, every event validated, beside NATS
JetStream in the same run (``bench/pipeline.py``). The secondary phases drain a
preloaded backlog with the AOF off, Synapse beside a minimal hand-written
router. Every server is our own, on a free port in a tmp folder (the bundled
Valkey, or ``$SYNAPSE_SERVER``; Debian's ``nats-server``). Runs are interleaved
and repeated; figures are medians, ratios come from this one run. Prints tables
and writes JSON to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import clientbench, gateway, headline, kafkaphase, natsjs, phases
from bench.pipeline import VARIANTS, WINDOW
from bench.proc import Pinning, pin
from bench.workload import mean_event_bytes, write_table
from synapse.embedded import EmbeddedServer, server_binary

RESULTS = Path(__file__).resolve().parent / "results"
PHASES = ("pipeline", "drain", "latency", "memory", "scale", "client", "gateway", "kafka")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bin/bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every phase")
    p.add_argument("--pipeline-events", type=int, help="events per pipeline run (default 100000)")
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"pipeline variants to run: {','.join(VARIANTS)}",
    )
    p.add_argument("--no-nats", action="store_true", help="pipeline without NATS JetStream")
    p.add_argument(
        "--pipeline-latency-s", type=float, help="seconds of each latency run (default 10)"
    )
    p.add_argument("--events", type=int, help="events per drain run (default 200000)")
    p.add_argument("--reps", type=int, help="drain repetitions per variant (default 3)")
    p.add_argument("--rate", type=int, default=5000, help="offered load of the latency phase")
    p.add_argument("--duration", type=float, help="seconds of the latency phase (default 30)")
    p.add_argument("--memory-events", type=int, help="events of the memory phase (default 1M)")
    p.add_argument("--client-events", type=int, help="events per client-phase run (default 100000)")
    p.add_argument("--kafka-events", type=int, help="records per kafka-phase run (default 50000)")
    p.add_argument("--batch", type=int, default=500, help="entries per XREADGROUP")
    p.add_argument("--fanout", type=int, default=2, help="destinations per event")
    p.add_argument("--gateway-clients", type=int, help="SSE clients (default 1000; quick 50)")
    p.add_argument("--gateway-rate", type=int, help="events/s to them (default 1000; quick 200)")
    p.add_argument("--gateway-seconds", type=float, help="publish time (default 20; quick 3)")
    p.add_argument("--only", default=",".join(PHASES), help=f"phases to run: {','.join(PHASES)}")
    p.add_argument("--no-pin", action="store_true", help="do not pin server and routers to cores")
    p.add_argument("--out", type=Path, help="JSON result path (default bench/results/<time>.json)")
    args = p.parse_args(argv)
    quick = args.quick
    args.pipeline_events = args.pipeline_events or (3_000 if quick else 100_000)
    args.pipeline_latency_s = args.pipeline_latency_s or (1.0 if quick else 10.0)
    args.variants = [
        v for v in args.variants.split(",") if v and not (args.no_nats and v == "nats")
    ]
    if set(args.variants) - set(VARIANTS):
        p.error(f"unknown variants: {sorted(set(args.variants) - set(VARIANTS))}")
    args.events = args.events or (3_000 if quick else 200_000)
    args.reps = args.reps or (1 if quick else 3)
    args.duration = args.duration or (2.0 if quick else 30.0)
    args.memory_events = args.memory_events or (8_000 if quick else 1_000_000)
    args.gateway_clients = args.gateway_clients or (50 if quick else 1000)
    args.gateway_rate = args.gateway_rate or (200 if quick else 1000)
    args.gateway_seconds = args.gateway_seconds or (3.0 if quick else 20.0)
    args.client_events = args.client_events or (2_000 if quick else 100_000)
    args.kafka_events = args.kafka_events or (3_000 if quick else 50_000)
    args.only = [x for x in args.only.split(",") if x]
    unknown = set(args.only) - set(PHASES)
    if unknown:
        p.error(f"unknown phases: {sorted(unknown)}")
    return args


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("events_per_s", "client_us_per_event", "server_us_per_event", "cores_busy")
    out = dict(runs[0])
    out.update({k: statistics.median(r[k] for r in runs) for k in keys})
    out["runs"] = runs
    return out


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    pinning = Pinning.choose(not args.no_pin)
    pin(os.getpid(), pinning.driver)
    config = write_table(folder / "table", batch=args.batch, fanout=args.fanout)
    server = EmbeddedServer(folder / "server", extra_args=("--appendonly", "no"))
    server.start()
    result: dict[str, Any] = {
        "machine": machine(),
        "server": server_binary(),
        "server_allocator": server.allocator,  # what the drain phases' server runs with
        "pinning": pinning.describe,
        "settings": {
            "events": args.events,
            "reps": args.reps,
            "batch": args.batch,
            "fanout": args.fanout,
            "event_bytes": round(mean_event_bytes()),
            "validation": "synapse: on (jsonschema-rs); baseline: none",
            "pipeline_events": args.pipeline_events,
            "pipeline_window": WINDOW,
            "pipeline_validation": "synapse: in the router (jsonschema-rs); "
            "nats: in the producer (fastjsonschema)",
        },
        "versions": versions(),
    }
    try:
        b = phases.Bench(server, config, args.fanout, args.batch, pinning)
        if "pipeline" in args.only:
            # Unpinned: a producer, a router, the server (and NATS's threads) share the cores.
            pin(os.getpid(), set(phases.ALL_CPUS))
            result["pipeline"] = headline.run(
                folder / "pipeline",
                args.variants,
                args.pipeline_events,
                args.reps,
                args.pipeline_latency_s,
                args.batch,
            )
            pin(os.getpid(), pinning.driver)
        if "drain" in args.only:
            runs: dict[str, list[dict[str, Any]]] = {"synapse": [], "baseline": []}
            for rep in range(args.reps):
                order = ("synapse", "baseline") if rep % 2 == 0 else ("baseline", "synapse")
                for kind in order:
                    runs[kind].append(phases.drain(b, kind, args.events))
                    progress(f"drain {kind} rep {rep + 1}: {runs[kind][-1]['events_per_s']:,.0f}/s")
            result["drain"] = {k: median_of(v) for k, v in runs.items()}
            result["ratio"] = (
                result["drain"]["synapse"]["events_per_s"]
                / result["drain"]["baseline"]["events_per_s"]
            )
        if "latency" in args.only:
            result["latency"] = phases.latency(b, args.rate, args.duration)
            progress(f"latency p99 {result['latency']['p99_ms']:.2f} ms")
            result["latency_baseline"] = phases.latency(b, args.rate, args.duration, "baseline")
            progress(f"latency (baseline) p99 {result['latency_baseline']['p99_ms']:.2f} ms")
        if "memory" in args.only:
            chunk = max(1, min(100_000, args.memory_events // 10))
            result["memory"] = phases.memory(b, args.memory_events, chunk)
            progress(f"memory end {result['memory']['rss_mb_end']:.1f} MB")
        if "scale" in args.only:
            scale: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
            for rep in range(args.reps):
                for routers in (1, 2) if rep % 2 == 0 else (2, 1):
                    scale[routers].append(
                        phases.drain(b, "synapse", args.events, routers=routers, pinned=False)
                    )
            one, two = median_of(scale[1]), median_of(scale[2])
            result["scale"] = {
                "one": one,
                "two": two,
                "ratio": two["events_per_s"] / one["events_per_s"],
            }
            progress(f"scale-out x{result['scale']['ratio']:.2f}")
        if "gateway" in args.only:
            b.r.flushall()
            # unpinned, like the latency phase: gateway, clients and server each wake per read
            pin(os.getpid(), set(phases.ALL_CPUS))
            pin(b.server_pid, set(phases.ALL_CPUS))
            result["gateway"] = gateway.run(
                server.url, args.gateway_clients, args.gateway_rate, args.gateway_seconds, folder
            )
            pin(os.getpid(), pinning.driver)
            progress(f"gateway p99 {result['gateway']['p99_ms']:.1f} ms")
        if "client" in args.only:
            result["client"] = clientbench.run(
                server.url, args.client_events, args.reps, args.memory_events
            )
            ratios = result["client"]["ratios"]
            progress(f"client: subscribe x{ratios['subscribe_vs_handwritten']:.2f} of hand-written")
        if "kafka" in args.only:
            result["kafka"] = kafkaphase.run(
                folder / "kafka", args.kafka_events, args.reps, args.batch, pinning
            )
            progress(f"kafka: synapse / hand-written loop x{result['kafka']['ratio']:.2f}")
    finally:
        b.r.close()
        server.stop()
    return result


def progress(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    import psutil

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "load_avg_at_start": os.getloadavg(),
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
    }


def versions() -> dict[str, str]:
    """Server and client versions, for the record."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for name, cmd in (
        ("server", [server_binary(), "--version"]),
        ("nats-server", ["nats-server", "--version"]),
    ):
        try:
            out[name] = subprocess.run(
                cmd, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except OSError:
            out[name] = "not installed"
    for pkg in (
        "redis",
        "hiredis",
        "nats-py",
        "fastjsonschema",
        "jsonschema-rs",
        "orjson",
        "uvloop",
    ):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def report(result: dict[str, Any]) -> str:
    """The table for humans (the JSON has every run)."""
    lines = [
        f"machine: {result['machine']['cpus']} cpus, {result['machine']['cpu_model']}; "
        f"{result['pinning']}; python {result['machine']['python']}",
        f"workload: {result['settings']}",
    ]
    if "pipeline" in result:
        lines += ["", *headline.table(result["pipeline"])]
        if any(k in result for k in ("drain", "latency", "memory", "scale")):
            lines += ["", "secondary: the router alone (AOF off):"]
    if "drain" in result or "scale" in result:
        lines += [
            "",
            "| variant | events/s | client CPU us/event | server CPU us/event | cores busy |",
            "|---|---:|---:|---:|---:|",
        ]
    for name, key in (
        ("synapse (validation on)", "synapse"),
        ("baseline (no validation)", "baseline"),
    ):
        if "drain" in result:
            d = result["drain"][key]
            lines.append(
                f"| {name} | {d['events_per_s']:,.0f} | {d['client_us_per_event']:.1f} | "
                f"{d['server_us_per_event']:.1f} | {d['cores_busy']:.2f} |"
            )
    if "scale" in result:
        for label, key in (("synapse x1 (unpinned)", "one"), ("synapse x2 (unpinned)", "two")):
            d = result["scale"][key]
            lines.append(
                f"| {label} | {d['events_per_s']:,.0f} | {d['client_us_per_event']:.1f} | "
                f"{d['server_us_per_event']:.1f} | {d['cores_busy']:.2f} |"
            )
    lines.append("")
    if "ratio" in result:
        lines.append(f"ratio synapse / baseline (drain, medians): {result['ratio']:.2f}")
    for key in ("latency", "latency_baseline"):
        if key not in result:
            continue
        lat = result[key]
        lines.append(
            f"latency {lat['kind']} at {lat['rate']:,}/s for {lat['seconds']:g}s: "
            f"p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, "
            f"p99.9 {lat['p999_ms']:.2f} ms, max {lat['max_ms']:.2f} ms; "
            f"router CPU {lat['client_us_per_event']:.1f} us/event"
        )
    if "memory" in result:
        m = result["memory"]
        lines.append(
            f"router RSS: {m['rss_mb_steady']:.1f} MB steady, {m['rss_mb_end']:.1f} MB after "
            f"{m['events']:,} events (max {m['rss_mb_max']:.1f}, growth {m['growth_mb']:+.1f} MB)"
        )
        f = m["type_flood"]
        lines.append(
            f"router RSS under {f['events']:,} new {f['type_bytes']} B types: "
            f"{f['rss_mb_before']:.1f} -> {f['rss_mb_half']:.1f} -> {f['rss_mb_after']:.1f} MB "
            f"(growth {f['growth_mb']:+.1f} MB, second half {f['growth_second_half_mb']:+.1f} MB)"
        )
    if "scale" in result:
        lines.append(f"scale-out: 2 routers / 1 router = {result['scale']['ratio']:.2f}")
    if "gateway" in result:
        lines.append(gateway.report(result["gateway"]))
    if "client" in result:
        lines += ["", *clientbench.report(result["client"])]
    if "kafka" in result:
        lines += ["", *kafkaphase.report(result["kafka"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if "pipeline" in args.only and "nats" in args.variants and natsjs.binary() is None:
        print(f"bin/bench: {natsjs.INSTALL_HINT}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="synapse-bench-") as tmp:
        result = run(args, Path(tmp))
    out = args.out or RESULTS / time.strftime("%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(report(result))
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
