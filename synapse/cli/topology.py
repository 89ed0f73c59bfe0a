"""``synapse topology``: producers -> sources -> router -> routes -> destinations -> consumers.

Built from the routing table, ``XINFO GROUPS`` on every stream the picture holds and
the service registry, read through the commands' store (``cli/store.py``): on a
``kafka://`` URL topics, their lengths and every group's lag from the broker's offsets,
the table loaded for Kafka (``synapse.dlq`` by default). Each count
appears once: a source's pending and lag on its edge into the router, a consumer
group's on its edge from its stream. A group named after a registered service is that
service (its instances counted). Rendered as text, JSON (nodes and edges), Mermaid or
Graphviz DOT (``topoviews.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from synapse import keys
from synapse.cli import common, topoviews
from synapse.cli.services import live_services
from synapse.cli.store import Store, open_store
from synapse.config import RoutingTable
from synapse.kafka.names import retry_topic
from synapse.kafka.url import backend_kind
from synapse.matching import compile_glob, is_glob
from synapse.registry import Registration


@dataclass(slots=True)
class Graph:
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges: list[dict[str, Any]] = field(default_factory=list)

    def node(self, kind: str, name: str, **attrs: Any) -> str:
        node_id = f"{kind}:{name}"
        self.nodes.setdefault(node_id, {"id": node_id, "kind": kind, "name": name}).update(attrs)
        return node_id

    def edge(self, src: str, dst: str, **attrs: Any) -> None:
        if not any(e["from"] == src and e["to"] == dst for e in self.edges):
            self.edges.append({"from": src, "to": dst, **attrs})


class StoreView:
    """What the picture reads from the commands' store (``cli/store.py``): stream names,
    each stream's length and its groups (``Store.info``, read once per stream)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._info: dict[str, dict[str, Any] | None] = {}

    def retry_stream(self, service: str) -> str:
        return retry_topic(service) if self.store.kind == "kafka" else keys.retry_stream(service)

    def names(self, pattern: str) -> list[str]:
        return self.store.names(pattern)

    def _about(self, name: str) -> dict[str, Any] | None:
        if name not in self._info:
            self._info[name] = self.store.info(name) if self.store.exists(name) else None
        return self._info[name]

    def length(self, name: str) -> int | None:
        about = self._about(name)
        return None if about is None else int(about["length"])

    def groups(self, name: str) -> list[dict[str, Any]]:
        about = self._about(name)
        return [] if about is None else list(about["groups"])


def build(table: RoutingTable, view: StoreView, found: list[Registration]) -> Graph:
    """The whole picture as nodes and edges (see the module docstring)."""
    g = Graph()
    s = table.settings
    excluded = table.destinations | {s.dead_letter}
    sources: list[str] = []
    for pattern in table.sources:
        if is_glob(pattern):
            sources += [n for n in view.names(pattern) if n not in excluded]
        else:
            sources.append(pattern)
    sources = list(dict.fromkeys(sources))
    routers = [r for r in found if r.info.kind == "router"]
    router = g.node(
        "router",
        s.group,
        instances=len(routers),
        config=table.hash,
        running=sorted({r.info.config for r in routers if r.info.config}),
    )
    for source in sources:
        src = g.node("stream", source, role="source", length=view.length(source))
        info = next((x for x in view.groups(source) if x["name"] == s.group), None)
        g.edge(
            src,
            router,
            kind="consumed",
            group=s.group,
            pending=info["pending"] if info else None,
            lag=info["lag"] if info else None,
        )
    for route in table.routes:
        rid = g.node(
            "route",
            route.name,
            match=route.type_glob,
            source=route.source_glob,
            filtered=route.where is not None,
        )
        g.edge(router, rid, kind="routes")
        for dest in route.to:
            g.edge(rid, g.node("stream", dest, role="destination", length=view.length(dest)))
    dlq = g.node("stream", s.dead_letter, role="dead_letter", length=view.length(s.dead_letter))
    g.edge(router, dlq, kind="dead_letter")
    services = [r for r in found if r.info.kind != "router"]
    consumed = {st for r in services for st in r.info.consumes}
    retries = {view.retry_stream(r.info.name) for r in services if r.info.group}
    watched = sorted(excluded | consumed | retries)
    for name in watched:
        if f"stream:{name}" not in g.nodes:
            length = view.length(name)
            if name in retries and not length:
                continue  # an empty retry stream says nothing
            role = "retry" if name in retries else "external"
            g.node("stream", name, role=role, length=length)
        for info in view.groups(name):
            _consumer(g, name, info, services)
    _services(g, services)
    return g


def _consumer(g: Graph, stream: str, info: dict[str, Any], services: list[Registration]) -> None:
    """A consumer group on ``stream``: a registered service when one is named so."""
    instances = [r for r in services if r.info.group == info["name"]]
    gid = g.node(
        "group",
        info["name"],
        service=bool(instances),
        instances=len({r.info.instance for r in instances}),
        consumers=len(info["consumers"]),
    )
    g.edge(f"stream:{stream}", gid, kind="consumes", pending=info["pending"], lag=info["lag"])


def _services(g: Graph, services: list[Registration]) -> None:
    """Producers (what they publish, where) and consumers not yet seen as groups."""
    by_name: dict[str, list[Registration]] = {}
    for reg in services:
        by_name.setdefault(reg.info.name, []).append(reg)
    for name, regs in sorted(by_name.items()):
        produces = sorted({st for r in regs for st in r.info.produces})
        types = sorted({t for r in regs for t in r.info.publishes})
        if produces:
            pid = g.node("producer", name, instances=len(regs), publishes=types)
            for stream in produces:
                for target in _streams_for(stream, g):
                    g.edge(pid, target, kind="produces")
        for stream in sorted({st for r in regs for st in r.info.consumes}):
            gid = f"group:{regs[0].info.group or name}"
            if gid not in g.nodes:
                g.node("group", regs[0].info.group or name, service=True, instances=len(regs),
                       consumers=0)  # fmt: skip
            for target in _streams_for(stream, g):
                g.edge(target, gid, kind="consumes", pending=None, lag=None)


def _streams_for(pattern: str, g: Graph) -> list[str]:
    test = compile_glob(pattern)
    found = [n for n, v in g.nodes.items() if v["kind"] == "stream" and test(v["name"])]
    return found or [g.node("stream", pattern, role="external", length=None)]


@click.command()
@common.config_option
@common.connection_options
@common.debug_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "mermaid", "dot"]),
    default="text",
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
def topology(config_path: Path, fmt: str, as_json: bool) -> None:
    """Producers -> sources -> router -> routes -> destinations -> consuming services.

    Each source's pending and lag is shown once (on its edge into the router), each
    consumer group's once (on its edge from its stream).

    \b
    Examples:
      synapse topology
      synapse topology --format mermaid
      synapse topology --format dot | dot -Tpng -o topology.png
    """
    found = live_services()
    kind = backend_kind(click.get_current_context().meta["synapse.resolved_url"])
    table = common.table(config_path, kind)
    graph = build(table, StoreView(open_store(router_group=table.settings.group)), found)
    if as_json or fmt == "json":
        common.emit_json({"nodes": list(graph.nodes.values()), "edges": graph.edges})
    elif fmt == "mermaid":
        click.echo(topoviews.mermaid(graph.nodes, graph.edges))
    elif fmt == "dot":
        click.echo(topoviews.dot(graph.nodes, graph.edges))
    else:
        for line in topoviews.text(graph.nodes, graph.edges):
            click.echo(line)
