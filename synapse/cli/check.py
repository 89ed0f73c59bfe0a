"""``synapse check``: the config and its schemas, every problem with file:line.

Problems exit 1, every one in one run. With a ``kafka://`` URL (``--url`` /
``SYNAPSE_URL``), the table is checked for Kafka: every source, destination,
unrouted and dead-letter name must be a legal topic, and the default dead-letter
topic is ``synapse.dlq``, and a retention rule (``max_age``, ``maxlen``) is a warning:
Kafka does not apply it, the topics' ``retention.ms`` does. No broker is contacted.
Warnings (routes that can never match, destinations that look like typos of a known
name, retention on Kafka) are printed but exit 0, unless ``--strict``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from synapse.cli import common
from synapse.cli.lint import lint
from synapse.config import RoutingTable, load_table
from synapse.errors import ConfigError
from synapse.kafka.url import backend_kind
from synapse.kafka.url import parse as parse_kafka
from synapse.slotcheck import atomicity


@click.command()
@common.config_option
@common.connection_options
@common.json_option
@common.debug_option
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
@click.option(
    "--cluster",
    "for_cluster",
    is_flag=True,
    help="Also list which routes commit atomically on Redis Cluster (one hash slot).",
)
def check(config_path: Path, as_json: bool, strict: bool, for_cluster: bool) -> None:
    """Check routes.yaml and its schemas; exit 1 listing every problem.

    Warnings: routes that can never match, destinations that look like typos of a
    schema folder, source or other destination ("did you mean ...?"), and with a kafka://
    URL retention rules (Kafka applies the topics' retention.ms); --strict fails on them.

    \b
    Examples:
      synapse check --config /etc/synapse/routes.yaml
      synapse check --strict --json
      synapse check --url kafka://broker:9092     # Kafka's topic-name rules too
    """
    url = common.resolved_url()
    kind = backend_kind(url) if url else "redis"
    if url and kind == "kafka":
        parse_kafka(url)  # a malformed URL is a usage error, before the table
    try:
        table = load_table(config_path, kind=kind)
    except ConfigError as exc:
        if as_json:
            common.emit_json(
                {
                    "ok": False,
                    "config": str(config_path),
                    "problems": [
                        {"file": p.file, "line": p.line, "message": p.message} for p in exc.problems
                    ],
                    "warnings": [],
                }
            )
        else:
            for problem in exc.problems:
                click.echo(str(problem), err=True)
        sys.exit(common.EXIT_FAILED)
    warnings = lint(table, kind)
    failed = strict and bool(warnings)
    if as_json:
        common.emit_json(
            {
                "ok": not failed,
                "config": str(config_path),
                "hash": table.hash,
                "routes": len(table.routes),
                "sources": list(table.sources),
                "schemas": len(table.schemas.files),
                "problems": [],
                "warnings": [
                    {"file": w.file, "line": w.line, "message": w.message} for w in warnings
                ],
                **({"cluster": _cluster_verdicts(table)} if for_cluster else {}),
            }
        )
    else:
        for warning in warnings:
            click.echo(str(warning), err=True)
        state = "ok" if not warnings else f"ok with {common.plural(len(warnings), 'warning')}"
        click.echo(
            f"{config_path}: {state} ({common.plural(len(table.routes), 'route')}, "
            f"{common.plural(len(table.schemas.files), 'schema')}, hash {table.hash})"
        )
        for v in atomicity(table) if for_cluster else []:
            label = "route" if v.kind == "route" else "dead letters of"
            click.echo(f"  {label} {v.name}: {v.detail}")
    sys.exit(common.EXIT_FAILED if failed else common.EXIT_OK)


def _cluster_verdicts(table: RoutingTable) -> list[dict[str, object]]:
    """``--cluster``: per route and source's dead letters, atomic on Redis Cluster or not."""
    return [
        {"kind": v.kind, "name": v.name, "atomic": v.atomic, "detail": v.detail}
        for v in atomicity(table)
    ]
