"""The router process collects its young generation every 50k allocations, not 700."""

from __future__ import annotations

import gc

from synapse import gctune


def test_tune_sets_the_router_thresholds() -> None:
    """tune() applies THRESHOLDS (young 50k) and leaves the collector enabled."""
    before = gc.get_threshold()
    try:
        gctune.tune()
        assert gc.get_threshold() == gctune.THRESHOLDS
        assert gctune.THRESHOLDS[0] >= 10_000
        assert gc.isenabled()
    finally:
        gc.set_threshold(*before)
