"""The views of ``synapse topology``: text tables, Mermaid and Graphviz DOT.

Text is sections a person reads top to bottom, each thing once: the router with
its sources (entries, pending, lag) and routes (match -> destinations), dead
letters, producers, then each stream read by consumer groups with the groups'
lag. Mermaid and DOT draw the same graph left to right; counts label only the
edges that carry them (a source into the router, a stream into a group).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from synapse.cli.common import table_rows

Nodes = dict[str, dict[str, Any]]
Edges = list[dict[str, Any]]


def _count(value: Any) -> str:
    return "-" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"1 {word}"
    return f"{n:,} {word[:-1] + 'ies' if word.endswith('y') else word + 's'}"


def text(nodes: Nodes, edges: Edges) -> list[str]:
    """The text view (see the module docstring)."""
    out_of: dict[str, list[dict[str, Any]]] = {}
    for e in edges:
        out_of.setdefault(e["from"], []).append(e)
    lines: list[str] = []
    for rid, router in ((k, v) for k, v in nodes.items() if v["kind"] == "router"):
        lines.append(
            f"router {router['name']} ({_plural(router['instances'], 'instance')} running, "
            f"config {router['config']})"
        )
        feeds = [e for e in edges if e["to"] == rid]
        rows = [
            [nodes[e["from"]]["name"], _count(nodes[e["from"]].get("length")),
             _count(e.get("pending")), _count(e.get("lag"))]
            for e in feeds
        ]  # fmt: skip
        lines += ["  " + x for x in table_rows(rows, ["SOURCE", "ENTRIES", "PENDING", "LAG"])]
        routes = [nodes[e["to"]] for e in out_of.get(rid, []) if e.get("kind") == "routes"]
        rows = []
        for route in routes:
            dests = [nodes[e["to"]]["name"] for e in out_of.get(route["id"], [])]
            match = route["match"] + (" + where" if route.get("filtered") else "")
            if route.get("source"):
                match += f" from {route['source']}"
            rows.append([route["name"], match, ", ".join(dests)])
        lines.append("")
        lines += ["  " + x for x in table_rows(rows, ["ROUTE", "MATCH", "TO"])]
        for e in out_of.get(rid, []):
            if e.get("kind") == "dead_letter":
                dlq = nodes[e["to"]]
                lines += ["", f"  dead letters -> {dlq['name']} ({_count(dlq.get('length'))})"]
    producers = [v for v in nodes.values() if v["kind"] == "producer"]
    if producers:
        lines += ["", "producers"]
        rows = []
        for p in producers:
            targets = [nodes[e["to"]]["name"] for e in out_of.get(p["id"], [])]
            rows.append([p["name"], _plural(p["instances"], "instance"), ", ".join(targets),
                         ", ".join(p.get("publishes") or []) or "-"])  # fmt: skip
        lines += ["  " + x for x in table_rows(rows, ["SERVICE", "RUNNING", "TO", "TYPES"])]
    rows = list(_consumer_rows(nodes, edges))
    if rows:
        lines += ["", "consumers"]
        header = ["STREAM", "ENTRIES", "GROUP", "KIND", "PENDING", "LAG"]
        lines += ["  " + x for x in table_rows(rows, header)]
    return lines


def _consumer_rows(nodes: Nodes, edges: Edges) -> Iterator[list[str]]:
    last = ""
    for e in edges:
        group = nodes[e["to"]]
        if group["kind"] != "group":
            continue
        stream = nodes[e["from"]]
        if group.get("service"):
            kind = f"service, {_plural(group['instances'], 'instance')}"
        else:
            kind = f"group, {_plural(group['consumers'], 'consumer')}"
        name = stream["name"] if stream["name"] != last else ""
        entries = _count(stream.get("length")) if name else ""
        last = stream["name"]
        yield [name, entries, group["name"], kind, _count(e.get("pending")), _count(e.get("lag"))]


def _label(node: dict[str, Any]) -> str:
    kind = node["kind"]
    if kind == "stream":
        length = node.get("length")
        return f"{node['name']}\\n{'missing' if length is None else _plural(length, 'entry')}"
    if kind == "route":
        where = " + where" if node.get("filtered") else ""
        return f"{node['name']}\\n{node['match']}{where}"
    if kind == "router":
        return f"router {node['name']}\\n{_plural(node['instances'], 'instance')}"
    if kind == "producer":
        return f"{node['name']}\\n{_plural(node['instances'], 'instance')}"
    if node.get("service"):
        return f"{node['name']}\\nservice, {_plural(node['instances'], 'instance')}"
    return f"group {node['name']}\\n{_plural(node['consumers'], 'consumer')}"


def _edge_label(edge: dict[str, Any]) -> str:
    if edge.get("kind") == "dead_letter":
        return "dead letters"
    parts = []
    if edge.get("pending") is not None:
        parts.append(f"pending {edge['pending']}")
    if edge.get("lag") is not None:
        parts.append(f"lag {edge['lag']}")
    return ", ".join(parts)


def mermaid(nodes: Nodes, edges: Edges) -> str:
    ids: dict[str, str] = {}

    def mid(node_id: str) -> str:
        return ids.setdefault(node_id, f"n{len(ids)}_{re.sub(r'[^A-Za-z0-9]', '_', node_id)}")

    shapes = {
        "stream": ('[("', '")]'),
        "route": ('{{"', '"}}'),
        "group": ('(["', '"])'),
        "router": ('[["', '"]]'),
        "producer": ('>"', '"]'),
    }
    lines = ["flowchart LR"]
    for node_id, node in nodes.items():
        left, right = shapes.get(node["kind"], ('["', '"]'))
        label = _label(node).replace('"', "'").replace("\\n", "<br/>")
        lines.append(f"  {mid(node_id)}{left}{label}{right}")
    for e in edges:
        label = _edge_label(e)
        arrow = f' -->|"{label}"| ' if label else " --> "
        if e.get("kind") == "dead_letter":
            arrow = f' -.->|"{label}"| '
        lines.append(f"  {mid(e['from'])}{arrow}{mid(e['to'])}")
    return "\n".join(lines)


def dot(nodes: Nodes, edges: Edges) -> str:
    shapes = {
        "stream": "cylinder",
        "route": "box",
        "group": "ellipse",
        "router": "box3d",
        "producer": "cds",
    }
    styles = {"route": ', style="rounded"', "router": ', style="bold"'}

    def q(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [
        "digraph synapse {",
        "  rankdir=LR;",
        '  node [fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    for node_id, node in nodes.items():
        label = q(_label(node)).replace("\\\\n", "\\n")
        style = styles.get(node["kind"], "")
        lines.append(f"  {q(node_id)} [label={label}, shape={shapes[node['kind']]}{style}];")
    for e in edges:
        label = _edge_label(e)
        attrs = [f"label={q(label)}"] if label else []
        if e.get("kind") == "dead_letter":
            attrs.append("style=dashed")
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"  {q(e['from'])} -> {q(e['to'])}{suffix};")
    lines.append("}")
    return "\n".join(lines)
