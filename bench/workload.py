"""The benchmark's workload: a routing table, ~300-byte events of mixed types, fast preloading.

The table uses the schemas that ship in ``config/schemas`` (copied beside a
bench ``routes.yaml`` in a tmp folder): every event is valid, is validated, and
goes to exactly ``fanout`` destinations (its topic stream, then ``all-events``
and ``audit-N``), so the router does the same number of writes as the baseline. One route has a
``where`` filter that lands on a destination the event already has, so the
filter runs per event without changing the fan-out.
"""

from __future__ import annotations

import json
import random
import shutil
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hiredis
import orjson

ROOT = Path(__file__).resolve().parent.parent
SOURCE = "ingress"
GROUP = "synapse-router"
TS_FIELD = b"bench-ts"  # producer's time.time_ns(), for the latency phase
TOPICS = ("model-events", "inference-events", "training-events")
FAMILIES = ("model", "inference", "training")  # event type prefix -> the topic stream <f>-events

ROUTES_YAML = """\
version: 1
router:
  group: {group}
  batch: {batch}{linger}
  block_ms: 2000
  claim_idle_ms: 600000
  rescan_interval_ms: 600000
sources: [{source}]
schemas:
  "model.*": model-events/model-event.json
  "inference.*": inference-events/inference-event.json
  "training.*": training-events/training-event.json
routes:
  - name: models
    match: "model.*"
    to: [model-events]
  - name: production-models
    match: model.ready
    where: {{stage: production, metrics.accuracy: {{gte: 0.5}}}}
    to: [model-events]
  - name: inference
    match: "inference.*"
    to: [inference-events]
  - name: training
    match: "training.*"
    to: [training-events]
{audit}"""
AUDIT_ROUTE = """\
  - name: audit
    match: "*"
    to: [{to}]
"""


def audit_streams(fanout: int) -> list[str]:
    """The destinations every event gets besides its topic stream."""
    return ["all-events", *(f"audit-{i}" for i in range(2, fanout))][: fanout - 1]


def write_table(
    folder: Path, batch: int = 500, fanout: int = 2, maxlen: int = 0, linger_ms: int | None = None
) -> Path:
    """routes.yaml + the shipped schemas in ``folder``; return the routes.yaml path.

    ``maxlen``: a retention cap on every destination (``MAXLEN ~`` on each copy);
    ``linger_ms``: the router's ``linger_ms`` (None: the default)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "config" / "schemas", folder / "schemas", dirs_exist_ok=True)
    audit = audit_streams(fanout)
    path = folder / "routes.yaml"
    path.write_text(
        ROUTES_YAML.format(
            group=GROUP,
            batch=batch,
            linger="" if linger_ms is None else f"\n  linger_ms: {linger_ms}",
            source=SOURCE,
            audit=AUDIT_ROUTE.format(to=", ".join(audit)) if audit else "",
        )
        + (f'retention:\n  "*": {{maxlen: {maxlen}}}\n' if maxlen else "")
    )
    return path


def _body(rng: random.Random, kind: str, n: int) -> tuple[str, dict[str, object]]:
    model = f"model-{rng.randrange(1000):04d}"
    trace = f"{rng.getrandbits(128):032x}"
    if kind == "model":
        return rng.choice(("model.ready", "model.updated")), {
            "model_id": model,
            "version": f"{rng.randrange(10)}.{rng.randrange(100)}.0",
            "framework": rng.choice(("pytorch", "jax", "onnx")),
            "artifact_uri": f"s3://models/{model}/weights-{n}.safetensors",
            "stage": rng.choice(("staging", "production")),
            "metrics": {"accuracy": round(rng.random(), 4), "loss": round(rng.random(), 4)},
            "tags": ["nightly", "eu-west"],
            "created_at": "2025-01-01T12:00:00.000Z",
            "trace_id": trace,
        }
    if kind == "inference":
        return rng.choice(("inference.requested", "inference.completed")), {
            "request_id": f"req-{n:012d}-{rng.randrange(1 << 30):08x}",
            "model_id": model,
            "model_version": "3.1.0",
            "latency_ms": round(rng.random() * 2000, 2),
            "status": rng.choice(("ok", "ok", "ok", "error", "timeout")),
            "tokens": rng.randrange(4096),
            "outputs": {"label": "cat", "score": round(rng.random(), 3)},
            "timestamp": "2025-01-01T12:00:00.000Z",
            "trace_id": trace,
        }
    return rng.choice(("training.progress", "training.completed")), {
        "run_id": f"run-{rng.randrange(1 << 20):06x}",
        "model_id": model,
        "epoch": rng.randrange(100),
        "step": rng.randrange(1_000_000),
        "progress": round(rng.random(), 4),
        "metrics": {"accuracy": round(rng.random(), 4), "loss": round(rng.random(), 4)},
        "artifact_uri": f"s3://runs/{model}/ckpt-{n}",
        "duration_s": round(rng.random() * 1e4, 1),
        "trace_id": trace,
    }


def events(count: int, seed: int = 7, type_bytes: int = 0) -> Iterator[list[bytes]]:
    """``count`` entries as flat field lists [type, t, data, json, producer, p].

    With ``type_bytes``, every type gets a distinct random suffix of that size
    (``model.ready.<hex>``): a flood of types no cache has seen.
    """
    rng = random.Random(seed)
    kinds = ("model", "inference", "inference", "training")
    for n in range(count):
        event_type, body = _body(rng, kinds[n % len(kinds)], n)
        if type_bytes:
            event_type = f"{event_type}.{rng.randbytes(type_bytes // 2).hex()}"
        yield [b"type", event_type.encode(), b"data", orjson.dumps(body), b"producer", b"bench"]


def preload(port: int, count: int, chunk: int = 2000, type_bytes: int = 0) -> bytes:
    """XADD ``count`` events to the source (hiredis-packed, pipelined); return the last id."""
    reader = hiredis.Reader()
    last = [b""]
    with socket.create_connection(("127.0.0.1", port)) as sock:
        pending = 0
        packed: list[bytes] = []
        for fields in events(count, type_bytes=type_bytes):
            command: tuple[str | bytes, ...] = ("XADD", SOURCE, "*", *fields)
            packed.append(hiredis.pack_command(command))  # type: ignore[arg-type]  # stub: 1-tuple
            if len(packed) == chunk:
                sock.sendall(b"".join(packed))
                pending += len(packed)
                packed = []
                pending = _drain(sock, reader, pending, chunk, last)
        if packed:
            sock.sendall(b"".join(packed))
            pending += len(packed)
        _drain(sock, reader, pending, 0, last)
    return last[0]


def _drain(
    sock: socket.socket, reader: hiredis.Reader, pending: int, keep: int, last: list[bytes]
) -> int:
    """Read replies until at most ``keep`` are outstanding (keeps one chunk in flight)."""
    while pending > keep:
        reply = reader.gets()
        if reply is False:
            reader.feed(sock.recv(1 << 20))
            continue
        if isinstance(reply, hiredis.ReplyError):
            raise RuntimeError(f"preload failed: {reply}")
        last[0] = reply
        pending -= 1
    return pending


def mean_event_bytes(sample: int = 1000) -> float:
    """Average size of an entry's fields (names + values), for the report."""
    sizes = [sum(len(x) for x in f) for f in events(sample)]
    return sum(sizes) / len(sizes)


def per_family(count: int) -> Counter[str]:
    """How many of the first ``count`` events belong to each family (model, ...)."""
    return Counter(f[1].split(b".", 1)[0].decode() for f in events(count))


def family_schemas() -> dict[str, dict[str, Any]]:
    """The shipped schema of each family, ``$ref`` files inlined and ``$schema`` dropped.

    For producer-side validators (fastjsonschema) that neither read files nor know
    draft 2020-12; the keywords these schemas use mean the same in draft 7.
    """
    folder = ROOT / "config" / "schemas"
    return {f: _inline(folder / f"{f}-events" / f"{f}-event.json") for f in FAMILIES}


def _inline(path: Path) -> dict[str, Any]:
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str) and not node["$ref"].startswith("#"):
                return _inline((path.parent / node["$ref"]).resolve())
            return {k: walk(v) for k, v in node.items() if k != "$schema"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    result: dict[str, Any] = walk(json.loads(path.read_text()))
    return result
