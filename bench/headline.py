"""The pipeline phase as ``bin/bench`` runs it: variants interleaved, medians, ratios, a table.

Each repetition runs every variant once, in an order rotated per repetition,
so a busy moment of the (shared) machine hits each variant alike. The figures
are medians over the repetitions; each Synapse variant's ratios are to NATS
JetStream from the same run (and, per repetition, to the NATS run of that
repetition, whose spread is reported too). Then each variant is offered half
its own median peak rate for the latency percentiles.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

from bench.pipeline import VARIANTS, Pipeline

KEYS = (
    "events_per_s",
    "server_us_per_event",
    "router_us_per_event",
    "producer_us_per_event",
    "total_us_per_event",
)


def run(
    folder: Path,
    names: list[str],
    count: int,
    reps: int,
    latency_s: float,
    batch: int,
) -> dict[str, Any]:
    p = Pipeline(folder, batch=batch)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            got = p.throughput(VARIANTS[name], count)
            runs[name].append(got)
            progress(f"pipeline {name} rep {rep + 1}: {got['events_per_s']:,.0f}/s")
    out: dict[str, Any] = {"events": count, "reps": reps, "variants": {}}
    for name in names:
        out["variants"][name] = summary(name, runs[name])
    if "nats" in names:
        nats = out["variants"]["nats"]
        for name in names:
            if name != "nats":
                out["variants"][name]["vs_nats"] = ratios(runs[name], runs["nats"], nats)
    for name in names:
        rate = max(1, round(out["variants"][name]["events_per_s"] / 2))
        lat = p.latency(VARIANTS[name], rate, latency_s)
        out["variants"][name]["latency"] = lat
        progress(f"pipeline {name} at {rate:,}/s: p99 {lat['p99_ms']:.2f} ms")
    return out


def summary(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    v = VARIANTS[name]
    allocators = sorted({str(r["allocator"]) for r in runs if r.get("allocator")})
    server = f", {'/'.join(allocators)} server" if allocators else ""
    out: dict[str, Any] = {
        "label": v.label + server,
        "stored_copies": v.stored_copies,
        "durability": v.durability,
    }
    out.update({k: statistics.median(r[k] for r in runs) for k in KEYS})
    out["runs"] = runs
    return out


def ratios(
    mine: list[dict[str, Any]], nats_runs: list[dict[str, Any]], nats: dict[str, Any]
) -> dict[str, Any]:
    """Throughput and CPU per event against NATS: of the medians, and per repetition."""
    per_rep = [a["events_per_s"] / b["events_per_s"] for a, b in zip(mine, nats_runs, strict=True)]
    median_eps = statistics.median(r["events_per_s"] for r in mine)
    median_cpu = statistics.median(r["total_us_per_event"] for r in mine)
    return {
        "events_per_s": median_eps / nats["events_per_s"],
        "events_per_s_per_rep": per_rep,
        "cpu_per_event": median_cpu / nats["total_us_per_event"],
    }


def table(result: dict[str, Any]) -> list[str]:
    """The headline table for humans (the JSON keeps every run)."""
    lines = [
        f"pipeline: {result['events']:,} events per run, median of {result['reps']}, "
        "clock from the producer's start until every copy is stored; not pinned",
        "",
        "| system | stored copies | durability | events/s | vs NATS | "
        "CPU us/event server + router + producer = total | vs NATS | "
        "p50 / p99 ms at 50% of peak |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for d in result["variants"].values():
        vs = d.get("vs_nats")
        eps_vs = cpu_vs = "1.00x" if d["label"].startswith("NATS") else "-"
        if vs:
            per = vs["events_per_s_per_rep"]
            eps_vs = f"{vs['events_per_s']:.2f}x ({min(per):.2f}-{max(per):.2f})"
            cpu_vs = f"{vs['cpu_per_event']:.2f}x"
        lat = d.get("latency")
        at = f"{lat['p50_ms']:.2f} / {lat['p99_ms']:.2f} ({lat['rate']:,}/s)" if lat else ""
        lines.append(
            f"| {d['label']} | {d['stored_copies']} | {d['durability']} | "
            f"{d['events_per_s']:,.0f} | {eps_vs} | "
            f"{d['server_us_per_event']:.1f} + {d['router_us_per_event']:.1f} + "
            f"{d['producer_us_per_event']:.1f} = {d['total_us_per_event']:.1f} | "
            f"{cpu_vs} | {at} |"
        )
    return lines


def progress(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)
