"""``synapse check``: the config and its schemas, every problem with file:line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from synapse.cluster import atomicity
from synapse.config import DEFAULT_CONFIG, load_table
from synapse.errors import ConfigError


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    envvar="SYNAPSE_CONFIG",
    default=DEFAULT_CONFIG,
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--cluster",
    "for_cluster",
    is_flag=True,
    help="Also list which routes commit atomically on Redis Cluster (one hash slot).",
)
def check(config_path: Path, as_json: bool, for_cluster: bool) -> None:
    """Check routes.yaml and its schemas; exit 1 listing every problem."""
    try:
        table = load_table(config_path)
    except ConfigError as exc:
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "ok": False,
                        "problems": [
                            {"file": p.file, "line": p.line, "message": p.message}
                            for p in exc.problems
                        ],
                    }
                )
            )
        else:
            for problem in exc.problems:
                click.echo(str(problem), err=True)
        sys.exit(1)
    summary = {
        "ok": True,
        "config": str(config_path),
        "hash": table.hash,
        "routes": len(table.routes),
        "sources": list(table.sources),
        "schemas": len(table.schemas.files),
    }
    verdicts = atomicity(table) if for_cluster else []
    if for_cluster:
        summary["cluster"] = [
            {"kind": v.kind, "name": v.name, "atomic": v.atomic, "detail": v.detail}
            for v in verdicts
        ]
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(
            f"{config_path}: ok ({len(table.routes)} routes, "
            f"{len(table.schemas.files)} schemas, hash {table.hash})"
        )
        for v in verdicts:
            label = "route" if v.kind == "route" else "dead letters of"
            click.echo(f"  {label} {v.name}: {v.detail}")
