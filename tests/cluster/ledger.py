"""A minimal delivery ledger for the scale-out tests: LOST / DUPLICATED / UNEXPECTED.

Stand-in until tests/reliability/ledger.py (the reliability issue) is merged:
the names and the idea are the same, so these tests can switch to it. The key of
an event is its provenance, (synapse-source, synapse-id), per destination stream.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

SOURCE = b"synapse-source"
ENTRY_ID = b"synapse-id"


@dataclass
class Ledger:
    """What should be in each destination, and what was found there."""

    expected: dict[str, set[tuple[bytes, bytes]]] = field(default_factory=dict)
    found: dict[str, Counter[tuple[bytes, bytes]]] = field(default_factory=dict)

    def expect(self, destination: str, source: str, ids: Iterable[bytes]) -> None:
        self.expected.setdefault(destination, set()).update((source.encode(), i) for i in ids)

    def scan(self, client: Any, destination: str) -> None:
        """Read ``destination`` whole (a sync redis or cluster client) and count each key."""
        counts = self.found.setdefault(destination, Counter())
        low = "-"
        while rows := client.xrange(destination, min=low, max="+", count=1000):
            for _, fields in rows:
                counts[(fields[SOURCE], fields[ENTRY_ID])] += 1
            low = "(" + rows[-1][0].decode()

    def lost(self) -> dict[str, int]:
        return {
            d: len(want - set(self.found.get(d, {})))
            for d, want in self.expected.items()
            if want - set(self.found.get(d, {}))
        }

    def duplicated(self) -> dict[str, int]:
        out = {d: sum(n - 1 for n in c.values() if n > 1) for d, c in self.found.items()}
        return {d: n for d, n in out.items() if n}

    def unexpected(self) -> dict[str, int]:
        out = {d: len(set(c) - self.expected.get(d, set())) for d, c in self.found.items()}
        return {d: n for d, n in out.items() if n}

    def summary(self) -> dict[str, Any]:
        return {
            "expected": sum(len(v) for v in self.expected.values()),
            "found": sum(sum(c.values()) for c in self.found.values()),
            "LOST": self.lost(),
            "DUPLICATED": self.duplicated(),
            "UNEXPECTED": self.unexpected(),
        }
