"""Tracing: one trace from publish, through the real router, to the handler's span."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from synapse.client import Bus, Event
from synapse.config import load_table
from tests.client.conftest import serving
from tests.conftest import running, wait_for, write_table

TABLE = """
version: 1
router: {block_ms: 100}
sources: [ingress]
routes:
  - {name: models, match: "model.*", to: [model-events]}
"""

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    """The SDK's in-memory exporter on the global provider (set once per process)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)
    return _EXPORTER


async def test_one_trace_from_publish_to_handler(
    url: str, r: redis.Redis, tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    """publish writes traceparent; the router copies it; the handler span is its child."""
    exporter.clear()
    table = load_table(write_table(tmp_path, TABLE))
    bus = Bus("runtime", url=url, register=False, block_ms=100)
    seen: list[Event] = []

    @bus.subscribe("model-events", types="model.*")
    async def handle(event: Event) -> None:
        seen.append(event)

    tracer = trace.get_tracer("test")
    async with running(table, url), serving(bus):
        with tracer.start_as_current_span("train") as root:
            await bus.publish("model.ready", {"model_id": "m1"})
        await wait_for(lambda: len(seen) == 1)
    [(_, copied)] = r.xrange("model-events")
    assert copied[b"traceparent"].startswith(b"00-")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    publish, handler = spans["publish model.ready"], spans["handle model.ready"]
    trace_id = root.get_span_context().trace_id
    assert {s.context.trace_id for s in spans.values()} == {trace_id}
    assert publish.parent is not None and publish.parent.span_id == root.get_span_context().span_id
    assert handler.parent is not None and handler.parent.span_id == publish.context.span_id
    assert handler.kind == trace.SpanKind.CONSUMER
    assert handler.attributes is not None
    assert handler.attributes["messaging.destination.name"] == "model-events"


async def test_no_span_no_traceparent(
    url: str, r: redis.Redis, exporter: InMemorySpanExporter
) -> None:
    """Without an active span, publish writes no traceparent field."""
    async with Bus("svc", url=url, register=False) as bus:
        await bus.publish("a.b", {})
    [(_, fields)] = r.xrange("ingress")
    assert b"traceparent" not in fields
