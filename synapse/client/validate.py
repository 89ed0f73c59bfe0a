"""Publish-time checks against the routing table: the router's own verdict, before writing.

``Bus(config=...)`` loads routes.yaml with its schema registry and asks the router's
pure planner what it would do with the entry about to be written. An event the
router would dead-letter (schema violation, too large, ...) raises
``PublishRefused`` with every schema error; so does one no route matches (the
router would dead-letter, drop or park it), unless ``strict=False``. Nothing is
written when it raises.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from synapse.config import RoutingTable, load_table
from synapse.errors import SynapseError
from synapse.kafka.url import Kind
from synapse.plan import DEAD_LETTER, DROPPED, Planner


class PublishRefused(SynapseError):
    """The event would not be routed; ``reason`` is the router's code, ``errors`` every cause."""

    def __init__(self, event_type: str, reason: str, errors: Sequence[str]) -> None:
        self.event_type = event_type
        self.reason = reason
        self.errors = list(errors)
        super().__init__(f"{event_type}: {reason}: " + "; ".join(self.errors))


class Checker:
    """Checks entries about to be published, on a compiled routing table."""

    def __init__(self, table: RoutingTable, *, strict: bool) -> None:
        self.table = table
        self.strict = strict
        self.planner = Planner(table)

    @classmethod
    def load(cls, path: str | Path, *, strict: bool, kind: Kind = "redis") -> Checker:
        """From routes.yaml (its schemas beside it), compiled for the store of ``kind``
        (Kafka: topic-name rules, ``synapse.dlq``); ``ConfigError`` when it is unusable."""
        return cls(load_table(path, kind=kind), strict=strict)

    @property
    def default_stream(self) -> str:
        """The first literal source of the table: where ``publish`` writes by default."""
        for source in self.table.sources:
            if not any(c in source for c in "*?["):
                return source
        return "ingress"

    def check(self, stream: str, fields: list[bytes], event_type: str, body: Any) -> None:
        """Raise ``PublishRefused`` when the router would not route this entry."""
        plan = self.planner.plan_entry(
            stream, stream.encode(), b"0-1", fields, 1, int(time.time() * 1000)
        )
        if plan.outcome == DEAD_LETTER and plan.reason != "no_route":
            errors = [plan.error or plan.reason or "refused"]
            schema = self.table.schemas.schema_for(event_type)
            if plan.reason == "schema_violation" and schema is not None:
                errors = schema.errors(body) or errors
            raise PublishRefused(event_type, plan.reason or "refused", errors)
        unrouted = (
            plan.reason == "no_route"
            or plan.outcome == DROPPED
            or any(route == "unrouted" for _, route in plan.routes)
        )
        if unrouted and self.strict:
            raise PublishRefused(
                event_type,
                "no_route",
                [
                    f"no route matches type {event_type!r} from {stream!r} "
                    f"(unrouted: {self.table.settings.unrouted}); "
                    "pass strict=False to publish anyway"
                ],
            )
