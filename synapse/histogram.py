"""A histogram that takes many equal observations in one step (per batch, not per event).

prometheus_client has no public bulk observe, and its Histogram's internals (``_sum``,
``_buckets``) are private. ``BulkHistogram`` keeps its own bucket counts and exposes them
through the library's public collector API (``HistogramMetricFamily``), so every encoder
(Prometheus text, OpenMetrics) renders it like any other histogram.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class BulkHistogram(Collector):
    """A histogram without labels; its counts are guarded by a lock because the
    exposition reads them from a worker thread."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = [float(b) for b in buckets]
        if self._bounds[-1] != float("inf"):
            self._bounds.append(float("inf"))
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe(self, amount: float) -> None:
        self.observe_many(amount, 1)

    def observe_many(self, amount: float, count: int) -> None:
        """``count`` observations of ``amount``: buckets and count exact, sum up to rounding."""
        if count <= 0:
            return
        i = bisect_left(self._bounds, amount)  # the first bound >= amount (le is inclusive)
        with self._lock:
            self._sum += amount * count
            self._counts[i] += count

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, n in zip(self._bounds, counts, strict=True):
            cumulative += n
            buckets.append((floatToGoString(bound), cumulative))  # type: ignore[no-untyped-call]
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)
