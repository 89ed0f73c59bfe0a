"""``python -m bench.luaab``: the commit's server cost, A/B on replayed batches.

Fills a fresh server's source stream with the bench events and reads them into
the group (so they are pending, as in the router), plans and encodes them in
batches with Synapse's own pure code (``Planner.plan_batch``,
``commit.encode``), then applies every batch with one commit variant while
measuring the server alone: its CPU (psutil), INFO commandstats and the AOF
bytes appended (rewrites off). Variants are edited copies of the script's
arguments (or of the script), made here: ``synapse/commit.py`` is not changed. Each repetition
runs every variant on a fresh server, in a rotated order.

    python -m bench.luaab --events 50000 --reps 3
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench.proc import cpu_s
from bench.readings import environ
from bench.workload import GROUP, SOURCE, preload, write_table
from synapse.allocator import ENV as MALLOC
from synapse.commit import COMMIT_LUA, encode
from synapse.config import load_table
from synapse.embedded import EmbeddedServer
from synapse.plan import Planner

Argv = list[Any]


def short_names(argv: Argv) -> Argv:
    """Provenance field names of 2 bytes (``_s``, ``_i``, ``_r``) instead of 10-14."""
    out = list(argv)
    out[2], out[4], out[5] = b"_s", b"_i", b"_r"
    return out


VARIANTS: dict[str, tuple[str, Callable[[Argv], Argv]]] = {
    "current": (COMMIT_LUA, lambda a: a),
    "short-names": (COMMIT_LUA, short_names),
}


def batches(r: redis.Redis, config: Path, count: int, size: int) -> list[tuple[list[Any], Argv]]:
    """Make ``count`` events pending in the group; their commits' KEYS and ARGV, by batch."""
    r.xgroup_create(SOURCE, GROUP, "0", mkstream=True)
    planner = Planner(load_table(config))
    out: list[tuple[list[Any], Argv]] = []
    while True:
        reply: Any = r.xreadgroup(GROUP, "replay", {SOURCE: ">"}, count=size)
        if not reply:
            return out
        entries = [(i, [x for kv in f.items() for x in kv]) for i, f in reply[0][1]]
        plan = planner.plan_batch(SOURCE, entries, now_ms=0)
        keys, argv = encode(plan, GROUP)
        out.append((keys, argv))


def one(
    folder: Path, config: Path, name: str, count: int, size: int, env: dict[str, str]
) -> dict[str, Any]:
    script, edit = VARIANTS[name]
    args = ("--auto-aof-rewrite-percentage", "0")
    with environ(env):
        server = EmbeddedServer(folder, extra_args=args).start()
    assert server.process is not None
    r = redis.Redis(port=server.port)
    try:
        preload(server.port, count)
        work = batches(r, config, count, size)
        sha = r.script_load(script)
        assert sha == hashlib.sha1(script.encode()).hexdigest()
        r.config_resetstat()
        aof0 = r.info("persistence")["aof_current_size"]
        cpu0 = cpu_s(server.process.pid, children=True)
        for keys, argv in work:
            failed, skipped = r.evalsha(sha, len(keys), *keys, *edit(argv))
            if failed or skipped:
                raise RuntimeError(f"{name}: failed {failed[:2]}, skipped {len(skipped)}")
        cpu = cpu_s(server.process.pid, children=True) - cpu0
        aof = r.info("persistence")["aof_current_size"] - aof0
        stats = r.info("commandstats")
        if r.xpending(SOURCE, GROUP)["pending"]:
            raise RuntimeError(f"{name}: entries left pending")
    finally:
        r.close()
        server.stop()
    return {
        "server_us_per_event": cpu / count * 1e6,
        "evalsha_us_per_event": stats["cmdstat_evalsha"]["usec"] / count,
        "aof_bytes_per_event": aof / count,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.luaab", description=__doc__)
    p.add_argument("variants", nargs="*", help=f"of {', '.join(VARIANTS)} (default: all)")
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--fanout", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--malloc", default="", help="the server's allocator (default: as picked)")
    args = p.parse_args(argv)
    env = {MALLOC: args.malloc} if args.malloc else {}
    names: list[str] = args.variants or list(VARIANTS)
    if set(names) - set(VARIANTS):
        p.error(f"unknown variants: {sorted(set(names) - set(VARIANTS))}")
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="synapse-luaab-") as tmp:
        config = write_table(Path(tmp) / "table", batch=args.batch, fanout=args.fanout)
        for rep in range(args.reps):
            shift = rep % len(names)
            for name in names[shift:] + names[:shift]:
                folder = Path(tmp) / f"{rep}-{name}"
                runs[name].append(one(folder, config, name, args.events, args.batch, env))
    print(
        f"commit only, fan-out {args.fanout}, batch {args.batch}, {args.events:,} events, "
        f"median of {args.reps}"
    )
    print(f"| variant | server CPU us/event | x {names[0]} | EVALSHA us/event | AOF bytes/event |")
    print("|---|---:|---:|---:|---:|")
    key = "server_us_per_event"
    for name in names:
        med = {k: statistics.median(r[k] for r in runs[name]) for k in runs[name][0]}
        pairs = zip(runs[name], runs[names[0]], strict=True)
        ratio = statistics.median(a[key] / b[key] for a, b in pairs)
        print(
            f"| {name} | {med[key]:.2f} | {ratio:.2f} | {med['evalsha_us_per_event']:.2f} | "
            f"{med['aof_bytes_per_event']:,.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
