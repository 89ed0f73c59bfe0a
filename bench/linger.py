"""``python -m bench.linger``: router CPU against latency at a moderate rate, with a linger.

At a fixed offered rate the router's batches are small and its CPU per event
is dominated by the two round trips per batch. This A/B runs the paced
pipeline (``bench.pipeline`` latency runs) with each ``router.linger_ms``
given (the wait after a read that was neither empty nor full, ``synapse.reads``),
interleaved, and prints router CPU per event and publish-to-copy percentiles
for each.

    python -m bench.linger --rate 10000 --seconds 10 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.pipeline import VARIANTS, Pipeline

FIGURES = ("p50_ms", "p99_ms", "router_us_per_event", "server_us_per_event")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.linger", description=__doc__)
    p.add_argument("lingers_ms", nargs="+", type=int)
    p.add_argument("--variant", default="synapse-fo1-everysec", choices=sorted(VARIANTS))
    p.add_argument("--rate", type=int, default=10_000)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--reps", type=int, default=2)
    args = p.parse_args(argv)
    names: list[int] = args.lingers_ms
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="synapse-linger-") as tmp:
        for rep in range(args.reps):
            shift = rep % len(names)
            for linger in names[shift:] + names[:shift]:
                pipe = Pipeline(Path(tmp) / f"{rep}-{linger}", linger_ms=linger)
                runs[linger].append(pipe.latency(VARIANTS[args.variant], args.rate, args.seconds))
    print(f"{args.variant} at {args.rate:,}/s for {args.seconds:g}s, median of {args.reps}")
    print("| linger ms | p50 ms | p99 ms | router us/event | server us/event |")
    print("|---:|---:|---:|---:|---:|")
    for linger in names:
        med = {k: statistics.median(r[k] for r in runs[linger]) for k in FIGURES}
        print(
            f"| {linger:g} | {med['p50_ms']:.2f} | {med['p99_ms']:.2f} | "
            f"{med['router_us_per_event']:.1f} | {med['server_us_per_event']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
