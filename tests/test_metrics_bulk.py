"""Per-batch metric accounting gives the same histogram as one observe() per event."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from synapse.metrics import LATENCY_BUCKETS, observe_many


def samples(h: Histogram) -> dict[str, float]:
    [metric] = h.collect()
    return {f"{s.name}{s.labels.get('le', '')}": s.value for s in metric.samples}


@pytest.mark.parametrize("amount", [0.0, 0.001, 0.0007, 0.04, 7.5, 1e6])
def test_observe_many_matches_repeated_observe(amount: float) -> None:
    """Buckets and count equal ``count`` observe() calls exactly; the sum up to rounding."""
    one = Histogram("one", "x", buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    bulk = Histogram("bulk", "x", buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
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
