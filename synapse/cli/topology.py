"""``synapse topology``: sources -> routes -> destinations -> consumer groups and services.

Built from the routing table, ``XINFO GROUPS`` on every stream and the service
registry; each edge into a consumer carries its pending count and lag. Rendered as
text, JSON (nodes and edges), Mermaid or Graphviz DOT.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from synapse.cli import common
from synapse.cli.services import live_services
from synapse.cli.streams import groups_of, stream_names
from synapse.config import RoutingTable
from synapse.matching import compile_glob, is_glob


@dataclass(slots=True)
class Graph:
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges: list[dict[str, Any]] = field(default_factory=list)

    def node(self, kind: str, name: str, **attrs: Any) -> str:
        node_id = f"{kind}:{name}"
        self.nodes.setdefault(node_id, {"id": node_id, "kind": kind, "name": name}).update(attrs)
        return node_id

    def edge(self, src: str, dst: str, **attrs: Any) -> None:
        self.edges.append({"from": src, "to": dst, **attrs})


def _length(client: common.Client, name: str) -> int | None:
    return int(client.xlen(name)) if client.type(name) == b"stream" else None


def build(table: RoutingTable, client: common.Client) -> Graph:
    g = Graph()
    s = table.settings
    excluded = table.destinations | {s.dead_letter}
    sources: list[str] = []
    for pattern in table.sources:
        if is_glob(pattern):
            sources += [n for n in stream_names(client, pattern) if n not in excluded]
        else:
            sources.append(pattern)
    groups = {name: _groups(client, name) for name in {*sources, *excluded}}
    for source in dict.fromkeys(sources):
        router = next((x for x in groups[source] if x["name"] == s.group), None)
        src = g.node("stream", source, role="source", length=_length(client, source))
        for route in table.routes:
            if route.matches_source is not None and not route.matches_source(source):
                continue
            rid = g.node(
                "route",
                route.name,
                match=route.type_glob,
                source=route.source_glob,
                filtered=route.where is not None,
            )
            g.edge(
                src,
                rid,
                group=s.group,
                pending=router["pending"] if router else None,
                lag=router["lag"] if router else None,
            )
    for route in table.routes:
        rid = f"route:{route.name}"
        if rid not in g.nodes:
            g.node(
                "route",
                route.name,
                match=route.type_glob,
                source=route.source_glob,
                filtered=route.where is not None,
            )
        for dest in route.to:
            g.edge(rid, g.node("stream", dest, role="destination", length=_length(client, dest)))
    dlq = g.node("stream", s.dead_letter, role="dead_letter", length=_length(client, s.dead_letter))
    for source in sources:
        g.edge(f"stream:{source}", dlq, kind="dead_letter")
    for name in sorted(excluded):
        for info in groups[name]:
            gid = g.node(
                "group", f"{name}/{info['name']}", stream=name, consumers=len(info["consumers"])
            )
            g.edge(f"stream:{name}", gid, pending=info["pending"], lag=info["lag"])
    for reg in live_services():
        sid = g.node(
            "service",
            f"{reg.info.name}/{reg.info.instance}",
            service_kind=reg.info.kind,
            version=reg.info.version,
            config=reg.info.config or None,
        )
        if reg.info.kind == "router":
            continue  # the router is the routes themselves
        for stream in reg.info.consumes:
            for name in _streams_for(stream, g):
                g.edge(name, sid, kind="consumes")
        for stream in reg.info.produces:
            for name in _streams_for(stream, g):
                g.edge(sid, name, kind="produces")
    return g


def _streams_for(pattern: str, g: Graph) -> list[str]:
    test = compile_glob(pattern)
    found = [n for n, v in g.nodes.items() if v["kind"] == "stream" and test(v["name"])]
    return found or [g.node("stream", pattern, role="external", length=None)]


def _groups(client: common.Client, name: str) -> list[dict[str, Any]]:
    if client.type(name) != b"stream":
        return []
    return groups_of(client, name)


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
    """Sources -> routes -> destinations -> consumer groups, with pending and lag."""
    graph = build(common.table(config_path), common.connect())
    if as_json or fmt == "json":
        common.emit_json({"nodes": list(graph.nodes.values()), "edges": graph.edges})
    elif fmt == "mermaid":
        click.echo(mermaid(graph))
    elif fmt == "dot":
        click.echo(dot(graph))
    else:
        for line in text(graph):
            click.echo(line)


def _edge_label(edge: dict[str, Any]) -> str:
    parts = []
    if edge.get("pending") is not None:
        parts.append(f"pending {edge['pending']}")
    if edge.get("lag") is not None:
        parts.append(f"lag {edge['lag']}")
    if edge.get("kind") in ("dead_letter", "consumes", "produces"):
        parts.append(edge["kind"].replace("_", " "))
    return ", ".join(parts)


def _node_label(node: dict[str, Any]) -> str:
    if node["kind"] == "stream":
        length = node.get("length")
        return f"{node['name']} ({'missing' if length is None else length})"
    if node["kind"] == "route":
        return f"{node['name']} [{node['match']}{' + where' if node.get('filtered') else ''}]"
    if node["kind"] == "group":
        return f"group {node['name']} ({node['consumers']} consumers)"
    return f"service {node['name']}"


def text(g: Graph) -> list[str]:
    out_edges: dict[str, list[dict[str, Any]]] = {}
    for e in g.edges:
        out_edges.setdefault(e["from"], []).append(e)
    lines: list[str] = []

    def walk(node_id: str, depth: int, seen: set[str]) -> None:
        for e in out_edges.get(node_id, []):
            label = _edge_label(e)
            target = g.nodes[e["to"]]
            lines.append(f"{'  ' * depth}-> {_node_label(target)}{f'  ({label})' if label else ''}")
            if e["to"] not in seen and e.get("kind") != "dead_letter":
                walk(e["to"], depth + 1, seen | {e["to"]})

    roots = [n for n, v in g.nodes.items() if v.get("role") == "source"]
    roots += [n for n, v in g.nodes.items() if v["kind"] == "service" and n in out_edges]
    for root in roots:
        lines.append(_node_label(g.nodes[root]))
        walk(root, 1, {root})
    return lines


def _mid(node_id: str, ids: dict[str, str]) -> str:
    return ids.setdefault(node_id, f"n{len(ids)}_{re.sub(r'[^A-Za-z0-9]', '_', node_id)}")


def mermaid(g: Graph) -> str:
    ids: dict[str, str] = {}
    shapes = {"stream": ('[("', '")]'), "route": ('{{"', '"}}'), "group": ('(["', '"])')}
    lines = ["flowchart LR"]
    for node_id, node in g.nodes.items():
        left, right = shapes.get(node["kind"], ('["', '"]'))
        label = _node_label(node).replace('"', "'")
        lines.append(f"  {_mid(node_id, ids)}{left}{label}{right}")
    for e in g.edges:
        label = _edge_label(e)
        arrow = f' -->|"{label}"| ' if label else " --> "
        lines.append(f"  {_mid(e['from'], ids)}{arrow}{_mid(e['to'], ids)}")
    return "\n".join(lines)


def dot(g: Graph) -> str:
    shapes = {"stream": "cylinder", "route": "hexagon", "group": "box", "service": "ellipse"}

    def q(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["digraph synapse {", "  rankdir=LR;"]
    for node_id, node in g.nodes.items():
        lines.append(
            f"  {q(node_id)} [label={q(_node_label(node))}, shape={shapes[node['kind']]}];"
        )
    for e in g.edges:
        label = _edge_label(e)
        attrs = f" [label={q(label)}]" if label else ""
        lines.append(f"  {q(e['from'])} -> {q(e['to'])}{attrs};")
    lines.append("}")
    return "\n".join(lines)
