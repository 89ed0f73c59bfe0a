"""Per-batch metric accounting gives the same histogram as one observe() per event."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from synapse.histogram import BulkHistogram
from synapse.metrics import LATENCY_BUCKETS, observe_many


def samples(h: Histogram | BulkHistogram) -> dict[str, float]:
    [metric] = h.collect()
    return {f"{s.name}{s.labels.get('le', '')}": s.value for s in metric.samples}


@pytest.mark.parametrize("amount", [0.0, 0.001, 0.0007, 0.04, 7.5, 1e6])
def test_observe_many_matches_repeated_observe(amount: float) -> None:
    """Buckets and count equal ``count`` observe() calls exactly; the sum up to rounding."""
    one = Histogram("one", "x", buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    bulk = BulkHistogram("bulk", "x", buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    for _ in range(37):
        one.observe(amount)
        one.observe(0.003)
    observe_many(bulk, amount, 37)
    observe_many(bulk, 0.003, 37)
    observe_many(bulk, 0.5, 0)  # nothing
    a = {k.removeprefix("one"): v for k, v in samples(one).items()}
    b = {k.removeprefix("bulk"): v for k, v in samples(bulk).items()}
    assert a.pop("_sum") == pytest.approx(b.pop("_sum"))
    assert a == b


@pytest.mark.parametrize("render", [generate_latest, openmetrics_latest])
def test_bulk_histogram_renders_like_the_library_histogram(render: object) -> None:
    """Both encoders render a BulkHistogram line for line like prometheus-client's Histogram."""
    reg_a, reg_b = CollectorRegistry(), CollectorRegistry()
    one = Histogram("lat_seconds", "x", buckets=LATENCY_BUCKETS, registry=reg_a)
    bulk = BulkHistogram("lat_seconds", "x", buckets=LATENCY_BUCKETS, registry=reg_b)
    for amount in (0.0025, 0.01, 61.0):
        for _ in range(4):
            one.observe(amount)
        bulk.observe_many(amount, 4)
    assert callable(render)
    assert render(reg_a) == render(reg_b)
