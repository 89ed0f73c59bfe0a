"""`synapse topology` on a 20-route table: each thing once, the router's node wired, services."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from synapse import registry
from tests.cli.conftest import Invoke, as_json
from tests.conftest import write_table

ROUTES = "\n".join(
    f"  - {{name: route-{i:02d}, match: 'topic{i}.*', to: [dest-{i % 7}]}}" for i in range(20)
)
TABLE = f"""
version: 1
sources: [ingress, "ingress:*"]
routes:
{ROUTES}
"""


@pytest.fixture
def twenty(tmp_path: Path, r: redis.Redis, url: str) -> Path:
    """A 20-route table, two sources with a backlog, a service consuming dest-1."""
    config = write_table(tmp_path / "cfg", TABLE)
    for source in ("ingress", "ingress:b"):
        r.xadd(source, {"type": "topic1.x", "data": "{}"})
        r.xgroup_create(source, "synapse-router", id="0")
    r.xadd("dest-1", {"type": "topic1.x", "data": "{}"})
    r.xadd("dest-1", {"type": "topic1.x", "data": "{}"})
    r.xgroup_create("dest-1", "runtime", id="0")
    r.xgroup_create("dest-1", "audit", id="$")

    async def register() -> None:
        client = aioredis.Redis.from_url(url)
        consumer = registry.ServiceInfo(
            name="runtime", instance="r-1", consumes=("dest-1",), group="runtime"
        )
        producer = registry.ServiceInfo(
            name="trainer", instance="t-1", produces=("ingress",), publishes=("topic1.ready",)
        )
        await registry.register(client, consumer, ttl_s=60)
        await registry.register(client, producer, ttl_s=60)
        await client.aclose()

    asyncio.run(register())
    return config


def test_text_shows_each_route_and_count_once(cli: Invoke, twenty: Path) -> None:
    """Text: one line per route and per source (with its lag), services with their lag."""
    out = cli("topology", "--config", str(twenty)).stdout
    lines = out.splitlines()
    for i in range(20):
        assert sum(f"route-{i:02d} " in line for line in lines) == 1, i
    sources = [line.split() for line in lines if line.strip().startswith("ingress")]
    assert sorted(row[0] for row in sources) == ["ingress", "ingress:b"]
    assert all(row[1:] == ["1", "0", "1"] for row in sources)  # entries, pending, lag
    assert "router synapse-router (0 instances running" in out
    [trainer] = [line for line in lines if line.strip().startswith("trainer")]
    assert trainer.split() == ["trainer", "1", "instance", "ingress", "topic1.ready"]
    [runtime] = [line for line in lines if " runtime " in line]
    assert runtime.split()[-5:] == ["service,", "1", "instance", "0", "2"]
    [audit] = [line for line in lines if " audit " in line]
    assert audit.split()[-5:] == ["group,", "0", "consumers", "0", "0"]
    assert len(lines) < 45  # 20 routes, 2 sources, 2 groups, 1 producer: fits a screen


def test_graphs_wire_the_router_node(cli: Invoke, twenty: Path) -> None:
    """JSON/Mermaid/DOT: sources feed the router, the router feeds every route; lag once."""
    data = as_json(cli("topology", "--config", str(twenty), "--format", "json"))
    edges = data["edges"]
    into = [e for e in edges if e["to"] == "router:synapse-router"]
    assert sorted(e["from"] for e in into) == ["stream:ingress", "stream:ingress:b"]
    assert all(e["lag"] == 1 for e in into)
    routes = [e["to"] for e in edges if e["from"] == "router:synapse-router"]
    assert sum(r.startswith("route:") for r in routes) == 20
    assert "stream:synapse:dlq" in routes
    lagged = [e for e in edges if e.get("lag") is not None]
    assert len(lagged) == 4  # two sources, two groups: each count once
    assert ("producer:trainer", "stream:ingress") in {(e["from"], e["to"]) for e in edges}
    dot = cli("topology", "--config", str(twenty), "--format", "dot").stdout
    assert dot.count('"router:synapse-router" -> "route:') == 20
    assert '"stream:ingress" -> "router:synapse-router" [label="pending 0, lag 1"];' in dot
    mermaid = cli("topology", "--config", str(twenty), "--format", "mermaid").stdout
    router_id = next(
        line.split("[[")[0].strip()
        for line in mermaid.splitlines()
        if "router synapse-router" in line
    )
    assert sum(line.strip().startswith(f"{router_id} -->") for line in mermaid.splitlines()) == 20


def test_services_show_each_groups_lag(cli: Invoke, twenty: Path) -> None:
    """`services` lists the consumer with its group's pending and lag, the producer's types."""
    data = as_json(cli("services", "--json"))
    by_name = {s["name"]: s for s in data["services"]}
    assert by_name["runtime"]["streams"] == {"dest-1": {"pending": 0, "lag": 2}}
    assert by_name["runtime"]["group"] == "runtime"
    assert by_name["trainer"]["publishes"] == ["topic1.ready"]
    lines = cli("services").stdout.splitlines()
    assert lines[0].split() == [
        "NAME", "INSTANCE", "KIND", "VERSION", "HEARTBEAT", "CONSUMES", "PENDING", "LAG",
        "PRODUCES", "TYPES",
    ]  # fmt: skip
    [runtime] = [line.split() for line in lines if line.startswith("runtime")]
    assert runtime[runtime.index("dest-1") + 1 : runtime.index("dest-1") + 3] == ["0", "2"]
