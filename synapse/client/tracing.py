"""Optional OpenTelemetry: ``traceparent`` out on publish, the handler's span in on subscribe.

With ``opentelemetry-api`` installed (extra ``otel``) and a span active, ``publish``
writes the W3C ``traceparent`` of the current context as an entry field (the
CloudEvents distributed-tracing extension); the router copies it like any field;
the subscriber starts the handler's span as its child. Without the package every
function here is a no-op costing one attribute check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

_trace: Any
_PROPAGATOR: Any
try:  # optional dependency
    from opentelemetry import trace as _trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _PROPAGATOR = TraceContextTextMapPropagator()
except ImportError:  # pragma: no cover - exercised when the extra is not installed
    _trace = None
    _PROPAGATOR = None

ENABLED = _trace is not None


def active() -> bool:
    """Whether spans are recorded: the package is there and an SDK provider is set."""
    if _trace is None:
        return False
    return not isinstance(_trace.get_tracer_provider(), _trace.ProxyTracerProvider)


def current_traceparent() -> str | None:
    """The active span's W3C traceparent, or None (no package, no valid span)."""
    if _trace is None:
        return None
    span = _trace.get_current_span()
    if not span.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


@contextlib.contextmanager
def handler_span(name: str, traceparent: str | None, attributes: dict[str, Any]) -> Iterator[Any]:
    """A CONSUMER span around one handler call, child of ``traceparent`` when given."""
    if _trace is None:
        yield None
        return
    context = _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None
    tracer = _trace.get_tracer("synapse.client")
    with tracer.start_as_current_span(
        name, context=context, kind=_trace.SpanKind.CONSUMER, attributes=attributes
    ) as span:
        yield span


@contextlib.contextmanager
def publish_span(event_type: str, stream: str) -> Iterator[None]:
    """A PRODUCER span around a publish, only when a trace is already active."""
    if _trace is None or not _trace.get_current_span().get_span_context().is_valid:
        yield
        return
    tracer = _trace.get_tracer("synapse.client")
    attributes = {"messaging.system": "synapse", "messaging.destination.name": stream}
    with tracer.start_as_current_span(
        f"publish {event_type}", kind=_trace.SpanKind.PRODUCER, attributes=attributes
    ):
        yield
