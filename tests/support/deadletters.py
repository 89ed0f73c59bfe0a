"""Dead letters written as the router writes them, for the CLI tests (plain and cluster)."""

from __future__ import annotations

from synapse.events import dead_letter_fields


def dead_letter_entry(
    original: list[bytes], *, n: int, source: str = "ingress", reason: str = "schema_violation"
) -> list[bytes]:
    """The flat fields of the dead letter of ``original``, taken from entry ``<n+1>-0``."""
    return dead_letter_fields(
        original,
        reason=reason,
        error="bad",
        source=source.encode(),
        entry_id=f"{n + 1}-0".encode(),
        deliveries=1,
        config_hash="abc",
        now_ms=1_700_000_000_000,
    )
