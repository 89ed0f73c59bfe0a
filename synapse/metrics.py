"""Every metric on one registry (the HTTP port that serves them is ``port.py``).

Metrics are created once per process (``Metrics``) and never re-created on
reload. Labels are bounded: source, route, destination, reason, kind. The hot
path counts per batch, not per event.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)

from synapse import __version__
from synapse.errors import REASONS
from synapse.histogram import BulkHistogram

disable_created_metrics()  # type: ignore[no-untyped-call]  # the _created series double the exposition for no use here

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    """The router's metrics, on a registry of their own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.consumed = Counter(
            "synapse_events_consumed", "Entries read from sources", ["source"], registry=r
        )
        self.routed = Counter(
            "synapse_events_routed",
            "Copies written to destinations",
            ["route", "destination"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "synapse_events_dead_lettered",
            "Entries moved to the dead-letter stream",
            ["reason"],
            registry=r,
        )
        self.dropped = Counter(
            "synapse_events_dropped",
            "Entries acknowledged without a write (policy, deleted)",
            ["reason"],
            registry=r,
        )
        self.retried = Counter(
            "synapse_events_retried",
            "Entries left pending after a failed destination write",
            ["source"],
            registry=r,
        )
        self.latency = BulkHistogram(
            "synapse_event_latency_seconds",
            "Time from the entry's addition to the source (stream id, Kafka record timestamp) "
            "to its commit",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch = Histogram(
            "synapse_batch_duration_seconds",
            "Plan and commit time of one batch",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.pending = Gauge(
            "synapse_source_pending",
            "Entries pending in the group (Kafka: records read by this router, not committed)",
            ["source"],
            registry=r,
        )
        self.lag = Gauge(
            "synapse_source_lag",
            "Entries not yet delivered to the group (Kafka: end offsets minus committed offsets)",
            ["source"],
            registry=r,
        )
        self.group_lag = Gauge(
            "synapse_consumer_group_lag",
            "Entries of a destination not yet read by a consuming service's group",
            ["stream", "group"],
            registry=r,
        )
        self.group_pending = Gauge(
            "synapse_consumer_group_pending",
            "Entries of a destination read but not acknowledged by a service's group",
            ["stream", "group"],
            registry=r,
        )
        self.reclaimed = Counter(
            "synapse_reclaimed", "Entries claimed from idle consumers", registry=r
        )
        # Named for Redis (DESIGN.md fixes the names); on every backend they mean the store:
        # Redis, the cluster, or the Kafka brokers.
        self.redis_up = Gauge(
            "synapse_redis_up", "1 when the store (Redis or the Kafka brokers) answers", registry=r
        )
        self.redis_errors = Counter(
            "synapse_redis_errors", "Store (Redis or Kafka) errors by kind", ["kind"], registry=r
        )
        self.group_recreated = Counter(
            "synapse_group_recreated",
            "Consumer groups (re)created after NOGROUP",
            ["source"],
            registry=r,
        )
        self.reloads = Counter(
            "synapse_config_reloads", "Config reloads by result", ["result"], registry=r
        )
        self.last_reload = Gauge(
            "synapse_config_last_reload_success_timestamp_seconds",
            "Time of the last successful config load",
            registry=r,
        )
        self.last_reload_ok = Gauge(
            "synapse_config_last_reload_successful",
            "1 when the last config load succeeded (0: a reload failed, old table kept)",
            registry=r,
        )
        self.last_reload_ok.set(1)  # the daemon never starts on a bad table
        self.config_info = Gauge(
            "synapse_config_info", "Hash of the loaded config", ["hash"], registry=r
        )
        self.sources = Gauge("synapse_sources", "Source streams being consumed", registry=r)
        self.sources_skipped = Counter(
            "synapse_sources_skipped",
            "Streams a source glob matched but the router left out, once per name "
            "(invalid_name: not UTF-8; write_target: the router writes it)",
            ["reason"],
            registry=r,
        )
        self.ready = Gauge("synapse_ready", "1 when the router is ready", registry=r)
        Info("synapse_build", "Build information", registry=r).info({"version": __version__})
        self.redis_up.set(0)
        for reason in ("no_route", "deleted"):
            self.dropped.labels(reason)
        for reason in REASONS:  # at 0 from the start: the first dead letter is an increase
            self.dead_lettered.labels(reason)
        for result in ("success", "failure"):
            self.reloads.labels(result)
        self._config_hash: str | None = None

    def watch_routes(self, routes: Iterable[tuple[str, Iterable[str]]]) -> None:
        """Create each (route, destination) series at 0, so its first copy is an increase
        (an alert on ``increase(...{route="critical-errors"})`` sees the first event)."""
        for route, destinations in routes:
            for dest in destinations:
                self.routed.labels(route, dest)

    def set_config(self, config_hash: str, loaded_at: float) -> None:
        if self._config_hash is not None:
            self.config_info.remove(self._config_hash)
        self._config_hash = config_hash
        self.config_info.labels(config_hash).set(1)
        self.last_reload.set(loaded_at)


def observe_many(histogram: BulkHistogram, amount: float, count: int) -> None:
    """``count`` observations of ``amount`` at once (per batch, not per event)."""
    histogram.observe_many(amount, count)
