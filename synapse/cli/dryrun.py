"""The dry run of one event, on the daemon's own pure core (no Redis).

``synapse route`` prints it and ``synapse test`` compares it with what a case
expects. The verdict comes from ``Planner.plan_entry``, exactly what the router
would do on a first delivery; the explanation comes from the same planner's
``routing.Routing`` (whether a route matched is the decision's own answer; why
not, and every schema error, are added beside it).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import orjson

from synapse.config import RoutingTable
from synapse.errors import InvalidEvent, Reason
from synapse.events import parse
from synapse.plan import Outcome, Planner


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """What the router would do with one event, and why."""

    source: str
    event_type: str | None
    outcome: Outcome  # routed | dead_letter | dropped
    destinations: tuple[tuple[str, str], ...]  # (destination, first route naming it)
    reason: Reason | None
    error: str | None
    schema: str | None
    schema_errors: tuple[str, ...]
    routes: tuple[dict[str, Any], ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "type": self.event_type,
            "outcome": self.outcome,
            "destinations": [d for d, _ in self.destinations],
            "routes_by_destination": dict(self.destinations),
            "dead_letter": self.reason if self.outcome == "dead_letter" else None,
            "reason": self.reason,
            "error": self.error,
            "schema": {
                "file": self.schema,
                "valid": not self.schema_errors if self.schema else None,
                "errors": list(self.schema_errors),
            },
            "routes": list(self.routes),
        }


def default_source(table: RoutingTable) -> str:
    """The first literal source of the table (a glob's prefix otherwise)."""
    for source in table.sources:
        if not any(c in source for c in "*?["):
            return source
    return table.sources[0].split("*")[0].rstrip(":") or "ingress"


def event_fields(
    table: RoutingTable, *, event_type: str | None, body: Any = None, raw: bytes | None = None
) -> list[bytes]:
    """Entry fields a producer would write: the type field and the data JSON."""
    s = table.settings
    fields: list[bytes] = []
    if event_type is not None:
        fields += (s.type_field.encode(), event_type.encode())
    data = raw if raw is not None else orjson.dumps(body)
    fields += (s.data_field.encode(), data)
    return fields


def dry_run(table: RoutingTable, source: str, fields: list[bytes]) -> Verdict:
    """The verdict of the router's planner on ``fields`` read from ``source``."""
    planner = Planner(table)
    plan = planner.plan_entry(source, source.encode(), b"0-1", fields, 1, int(time.time() * 1000))
    event_type: str | None = plan.event_type
    body: Any = None
    with contextlib.suppress(InvalidEvent):
        event_type, body = parse(fields, planner.limits)
    schema_name: str | None = None
    schema_errors: tuple[str, ...] = ()
    explained: tuple[dict[str, Any], ...] = ()
    if event_type is not None and body is not None:
        schema = planner.routing.schema_for(event_type)
        if schema is not None:
            schema_name = schema.name
            if not schema.fast.is_valid(body):
                schema_errors = tuple(schema.errors(body)) or ("does not match the schema",)
        explained = tuple(planner.routing.explain(source, event_type, body))
    return Verdict(
        source=source,
        event_type=event_type,
        outcome=plan.outcome,
        destinations=plan.routes,
        reason=plan.reason,
        error=plan.error,
        schema=schema_name,
        schema_errors=schema_errors,
        routes=explained,
    )
