"""``python -m bench.kafkaab REV [REV...]``: the router on Kafka, this tree against revisions.

One A/B in one run for a change of the Kafka hot path: each REV's ``synapse`` package
(``git archive``, beside this tree's ``bench``) and this tree's, each drained by
the ``kafka`` phase's ``drain`` (fresh tansu, preloaded source, every copy
counted), interleaved with the order rotated per repetition; medians and the
median of the per-repetition ratios to the first REV. ``--novalidate`` runs the table
without schemas.

    .venv/bin/python -m bench.kafkaab main --events 50000 --reps 3
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from bench import kafkaphase
from bench.proc import Pinning, pin

ROOT = Path(__file__).resolve().parent.parent


def export(rev: str, into: Path) -> Path:
    """REV's ``synapse`` package and this tree's ``bench`` in ``into``."""
    archive = subprocess.run(
        ["git", "archive", rev, "synapse"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    shutil.copytree(ROOT / "bench", into / "bench", ignore=shutil.ignore_patterns("results"))
    return into


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.kafkaab", description=__doc__)
    p.add_argument("revs", nargs="+", help="git revisions to compare this tree with")
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--novalidate", action="store_true", help="the table without schemas")
    args = p.parse_args(argv)
    pinning = Pinning.choose(True)
    pin(os.getpid(), pinning.driver)
    kind = "synapse-novalidate" if args.novalidate else "synapse"
    names = [*args.revs, "tree"]
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="synapse-kafkaab-") as tmp:
        code: dict[str, Path | None] = {
            rev: export(rev, Path(tmp) / f"code-{i}") for i, rev in enumerate(args.revs)
        }
        code["tree"] = None
        for rep in range(args.reps):
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                folder = Path(tmp) / f"run-{names.index(name)}-{rep}"
                run = kafkaphase.drain(
                    folder, kind, args.events, args.batch, pinning, code=code[name]
                )
                runs[name].append(run)
                print(f"{name} rep {rep + 1}: {run['records_per_s']:,.0f}/s", file=sys.stderr)
    print(f"{kind}, {args.events:,} records x {args.reps}; ratios to {names[0]}")
    print("| code | records/s | router CPU us/record | broker CPU us/record |")
    print("|---|---:|---:|---:|")
    for name, got in runs.items():
        med = kafkaphase.median_of(got)
        print(
            f"| {name} | {med['records_per_s']:,.0f} | {med['router_us_per_record']:.1f} "
            f"| {med['broker_us_per_record']:.1f} |"
        )
    for name in names[1:]:
        ratios = [
            n["records_per_s"] / b["records_per_s"]
            for n, b in zip(runs[name], runs[names[0]], strict=True)
        ]
        cpu = [
            n["router_us_per_record"] / b["router_us_per_record"]
            for n, b in zip(runs[name], runs[names[0]], strict=True)
        ]
        print(
            f"{name} / {names[0]}: records/s {statistics.median(ratios):.2f}, "
            f"router CPU per record {statistics.median(cpu):.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
