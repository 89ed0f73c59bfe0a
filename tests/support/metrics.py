"""Reading the router's metrics in tests through the registry's public API."""

from __future__ import annotations

from synapse.metrics import Metrics


def counted(metrics: Metrics, name: str, **labels: str) -> float:
    """The value of counter ``name`` (without ``_total``) for ``labels``; 0 when unset."""
    value = metrics.registry.get_sample_value(f"{name}_total", labels)
    return 0.0 if value is None else value
