"""``python -m bench.ab``: deployment settings A/B on the headline run, interleaved.

Each named setting changes only the server (its allocator, its arguments, the
binary) or the router's batch size; every repetition runs each setting once,
in an order rotated per repetition, on a fresh server. Prints medians and the
median of the per-repetition ratios to ``base``. Example::

    python -m bench.ab --variant synapse-fo2-everysec base jemalloc io-threads-2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.pipeline import VARIANTS, WINDOW, Pipeline
from synapse.allocator import ENV as MALLOC

SETTINGS: dict[str, dict[str, Any]] = {
    "base": {},  # the default server: the allocator synapse.allocator picks
    "nats": {"variant": "nats"},
    "libc": {"env": {MALLOC: "libc"}},  # the bundled Valkey as built
    "jemalloc": {"env": {MALLOC: "jemalloc"}},
    "mimalloc": {"env": {MALLOC: "mimalloc"}},
    "io-threads-2": {"args": ("--io-threads", "2")},
    "batch-100": {"batch": 100},
    "batch-2000": {"batch": 2000},
    "redis-7": {"env": {"SYNAPSE_SERVER": "redis-server"}},
    "no-aof-rewrite": {"args": ("--auto-aof-rewrite-percentage", "0")},
    "aof-off": {"args": ("--appendonly", "no")},
    # rewrite the AOF at 200% growth over its last rewrite (100%), from 256 MB (64 MB) on
    "aof-rewrite-200": {"args": ("--auto-aof-rewrite-percentage", "200")},
    "aof-rewrite-256mb": {"args": ("--auto-aof-rewrite-min-size", "256mb")},
    # write to the OS before replying, fsync left to the OS: JetStream's default durability
    "fsync-no": {"args": ("--appendfsync", "no")},
    # router and producer on the server's unix socket instead of loopback TCP
    "unix-socket": {"unix": True},
    "window-5000": {"window": 5000},  # the producer keeps 5,000 unacknowledged (1,000)
    "retention-10k": {"maxlen": 10_000},  # MAXLEN ~ 10000 on every copy: trimming runs
    "bus": {"producer": "bus"},  # the producer on Bus.publish_many instead of bare XADD
    "linger-0": {"linger": 0},  # router.linger_ms (default: synapse.config.LINGER_MS)
    "linger-1": {"linger": 1},
    "linger-2": {"linger": 2},
}
FIGURES = ("events_per_s", "server_us_per_event", "router_us_per_event", "total_us_per_event")


def combined(name: str) -> dict[str, Any]:
    """``a+b``: the settings of a and b together (arguments appended, env merged)."""
    out: dict[str, Any] = {}
    for part in name.split("+"):
        s = SETTINGS[part]
        out.update({k: v for k, v in s.items() if k not in ("env", "args")})
        out["env"] = {**out.get("env", {}), **s.get("env", {})}
        out["args"] = (*out.get("args", ()), *s.get("args", ()))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    p.add_argument("settings", nargs="+", help=f"of {', '.join(SETTINGS)}; a+b combines")
    p.add_argument("--variant", default="synapse-fo2-everysec", choices=sorted(VARIANTS))
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    names: list[str] = args.settings
    for name in names:
        unknown = set(name.split("+")) - set(SETTINGS)
        if unknown:
            p.error(f"unknown settings: {sorted(unknown)}")
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="synapse-ab-") as tmp:
        for rep in range(args.reps):
            shift = rep % len(names)
            for name in names[shift:] + names[:shift]:
                s = combined(name)
                pipe = Pipeline(
                    Path(tmp) / f"{rep}-{name}",
                    batch=s.get("batch", 500),
                    maxlen=s.get("maxlen", 0),
                    linger_ms=s.get("linger"),
                    producer=s.get("producer"),
                    unix_socket=s.get("unix", False),
                    window=s.get("window", WINDOW),
                    server_args=s.get("args", ()),
                    server_env=s.get("env"),
                )
                got = pipe.throughput(VARIANTS[s.get("variant", args.variant)], args.events)
                runs[name].append(got)
                print(f"ab: {name} rep {rep + 1}: {got['events_per_s']:,.0f}/s", file=sys.stderr)
    base = runs[names[0]]
    print(f"{args.variant}, {args.events:,} events, median of {args.reps}; ratios to {names[0]}")
    print("| setting | events/s | x | server us/event | router | total | evalsha us/event |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        med = {k: statistics.median(r[k] for r in runs[name]) for k in FIGURES}
        ratio = statistics.median(
            a["events_per_s"] / b["events_per_s"] for a, b in zip(runs[name], base, strict=True)
        )
        evalsha = statistics.median(
            r.get("commands", {}).get("evalsha", {}).get("usec", 0) / r["events"]
            for r in runs[name]
        )
        print(
            f"| {name} | {med['events_per_s']:,.0f} | {ratio:.2f} | "
            f"{med['server_us_per_event']:.1f} | {med['router_us_per_event']:.1f} | "
            f"{med['total_us_per_event']:.1f} | {evalsha:.2f} |"
        )
    out = Path(__file__).resolve().parent / "results" / time.strftime("ab-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(runs, indent=1))
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
