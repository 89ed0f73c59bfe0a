"""The routing table as a command loads it: a readable Failure when it is broken."""

from __future__ import annotations

from pathlib import Path

from synapse.cli.errors import Failure
from synapse.config import RoutingTable, load_table
from synapse.errors import ConfigError
from synapse.kafka.url import Kind


def table(config_path: Path, kind: Kind = "redis") -> RoutingTable:
    """The routing table (for ``kind``'s naming rules), or a Failure naming the first
    problems."""
    try:
        return load_table(config_path, kind=kind)
    except ConfigError as exc:
        first = "; ".join(str(p) for p in exc.problems[:3])
        more = (
            f" (+{len(exc.problems) - 3} more; run synapse check)" if len(exc.problems) > 3 else ""
        )
        raise Failure(f"bad config: {first}{more}") from exc


def table_or_none(config_path: Path, kind: Kind = "redis") -> RoutingTable | None:
    """The table when the file exists (a broken one is an error); None when absent."""
    if not config_path.exists():
        return None
    return table(config_path, kind)
