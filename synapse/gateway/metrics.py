"""The gateway's metrics (``synapse_gateway_*``), on a registry of their own.

Counted per read or per write, never per event per client on the hot path.
Labels are bounded: ``reason`` and ``kind`` take a handful of values.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.exposition import generate_latest

from synapse import __version__

disable_created_metrics()  # type: ignore[no-untyped-call]  # as the router's: no _created series

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

#: Why a request was refused (the ``reason`` label of requests_refused_total).
REFUSALS = ("unauthorized", "forbidden", "bad_request", "over_capacity", "not_a_stream")


class GatewayMetrics:
    """Every gateway metric, created once per process."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.clients = Gauge("synapse_gateway_clients", "Connected SSE clients", registry=r)
        self.streams = Gauge(
            "synapse_gateway_streams", "Streams the shared read loop reads", registry=r
        )
        self.connections = Counter(
            "synapse_gateway_connections", "SSE connections accepted", registry=r
        )
        self.refused = Counter(
            "synapse_gateway_requests_refused",
            "Requests to /events or / refused, by reason",
            ["reason"],
            registry=r,
        )
        self.disconnected = Counter(
            "synapse_gateway_clients_disconnected",
            "SSE clients ended by the gateway (slow: buffer full; shutdown; not_a_stream)",
            ["reason"],
            registry=r,
        )
        self.events_read = Counter(
            "synapse_gateway_events_read", "Entries read by the shared read loop", registry=r
        )
        self.deliveries = Counter(
            "synapse_gateway_deliveries",
            "Writes handed to clients (one per client per read, holding one or more events)",
            registry=r,
        )
        self.catchup_events = Counter(
            "synapse_gateway_catchup_events",
            "Entries read again for resuming clients (XRANGE from their cursor)",
            registry=r,
        )
        self.sent_bytes = Counter(
            "synapse_gateway_sent_bytes", "Bytes written to SSE clients", registry=r
        )
        self.read_lag = Histogram(
            "synapse_gateway_read_lag_seconds",
            "Entry id time to read by the gateway (first entry of each read)",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.write_lag = Histogram(
            "synapse_gateway_event_latency_seconds",
            "Entry id time to written to every live client's socket (first entry of each read)",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.redis_up = Gauge("synapse_gateway_redis_up", "1 when Redis answers", registry=r)
        self.redis_errors = Counter(
            "synapse_gateway_redis_errors", "Redis errors of the read loop", ["kind"], registry=r
        )
        Info("synapse_gateway_build", "Version", registry=r).info({"version": __version__})
        for reason in REFUSALS:
            self.refused.labels(reason=reason)

    def render(self) -> bytes:
        return generate_latest(self.registry)
