"""The reliability workload: the routes, and mixed events with where each must go.

The router runs as a real process through ``tests.support.router.RouterProcess``.
"""

from __future__ import annotations

import json
import random
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from synapse.config import RoutingTable, load_table
from tests.reliability.ledger import Fields, expect_of

ROUTER_BIN = str(Path(sys.executable).parent / "synapse-router")
GROUP = "synapse-router"
DLQ = "synapse:dlq"

ROUTES = """
    version: 1
    router:
      block_ms: 200
      claim_idle_ms: {claim_idle_ms}
      rescan_interval_ms: 1000
      batch: {batch}
      max_deliveries: {max_deliveries}
    sources: [ingress]
    routes:
      - name: models
        match: "model.*"
        to: [model-events, all-events]
      - name: prod
        match: model.ready
        where: {{stage: production}}
        to: [platform-events, model-events]
      - name: errors
        match: "*.error"
        to: [error-events]
      - name: audit
        match: "audit.*"
        to: [audit-events]
"""
DESTINATIONS = ("model-events", "all-events", "platform-events", "error-events", "audit-events")


def write_routes(
    folder: Path, *, claim_idle_ms: int = 1000, batch: int = 200, max_deliveries: int = 5
) -> tuple[Path, RoutingTable]:
    """routes.yaml for the reliability scenarios, written to ``folder``, and its table."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "routes.yaml"
    text = ROUTES.format(claim_idle_ms=claim_idle_ms, batch=batch, max_deliveries=max_deliveries)
    path.write_text(textwrap.dedent(text))
    return path, load_table(path)


_KINDS: list[tuple[str, Any]] = [
    ("model.ready", {"model_id": "m", "stage": "production"}),
    ("model.ready", {"model_id": "m", "stage": "staging"}),
    ("model.updated", {"model_id": "m"}),
    ("app.error", {"code": 500}),
    ("nothing.routes.this", {}),  # no route: dead-lettered
    ("model.ready", None),  # invalid JSON: dead-lettered
]


def mixed(
    table: RoutingTable, n: int, seed: int = 7, source: str = "ingress"
) -> Iterator[tuple[Fields, frozenset[str]]]:
    """``n`` events of several kinds (fan-out 1-3, dead letters), with where each must go."""
    rng = random.Random(seed)
    expectations: dict[int, frozenset[str]] = {}
    for _ in range(n):
        k = rng.randrange(len(_KINDS)) if rng.random() < 0.1 else rng.randrange(4)
        event_type, body = _KINDS[k]
        data = "{not json" if body is None else json.dumps({**body, "n": rng.randrange(10**6)})
        fields: dict[str | bytes, str | bytes] = {"type": event_type, "data": data}
        if k not in expectations:
            expectations[k] = expect_of(table, source, fields)
        yield fields, expectations[k]
