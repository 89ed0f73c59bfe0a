"""The per-batch latency accounting, before and after BulkHistogram (issue 16 item 8).

    .venv/bin/python -m bench.histogram_timeit

"old" is the replaced ``observe_many`` that wrote prometheus-client's private Histogram
fields (``_sum``, ``_upper_bounds``, ``_buckets``); "new" is ``synapse.histogram``'s public
collector. Both are timed in this one run, best of 5.
"""

from __future__ import annotations

import timeit
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

from synapse.metrics import LATENCY_BUCKETS, Metrics, observe_many


def old_observe_many(histogram: Any, amount: float, count: int) -> None:
    """The replaced version (prometheus-client internals), kept here for the comparison."""
    if count <= 0:
        return
    histogram._raise_if_not_observable()
    histogram._sum.inc(amount * count)
    for i, bound in enumerate(histogram._upper_bounds):
        if amount <= bound:
            histogram._buckets[i].inc(count)
            break


def main() -> None:
    old = Histogram("x", "x", buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    new = Metrics().latency
    n = 200_000
    results = {}
    for name, fn, h in (("old", old_observe_many, old), ("new", observe_many, new)):

        def calls(fn: Any = fn, h: Any = h) -> None:
            fn(h, 0.003, 37)
            fn(h, 0.2, 5)
            fn(h, 7.0, 1)

        results[name] = min(timeit.repeat(calls, number=n, repeat=5)) / n / 3 * 1e6
        print(f"{name}: {results[name]:.3f} us per observe_many call")
    print(f"new / old: {results['new'] / results['old']:.2f}")


if __name__ == "__main__":
    main()
