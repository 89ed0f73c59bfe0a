"""The garbage collector's schedule for a routing process (measured: docs/performance.md).

A batch of 500 entries allocates tens of thousands of short-lived containers
(the read reply, parsed bodies, plans). With CPython's default threshold (700
allocations) the young generation is collected ~15 times per batch and its
survivors (the batch in hand) are walked again and again: about 4 us of an
event's ~20 us of router CPU went to the collector on the bench workload.
Collecting the young generation every 50,000 allocations instead cut ~2 us per
event. Nothing else changes: reference counting frees almost everything at
once, and cyclic garbage is still collected, a little later.
"""

from __future__ import annotations

import gc

#: (young, middle, old) generation thresholds for the router process.
THRESHOLDS = (50_000, 20, 20)


def tune() -> None:
    """Apply the router's collector schedule to this process."""
    gc.set_threshold(*THRESHOLDS)
