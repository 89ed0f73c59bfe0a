"""Retry policy: capped exponential backoff with full jitter, as one pure function."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Delay before retry ``attempt`` (1-based): uniform in [0, min(cap, base * 2**(attempt-1))]."""

    base_s: float = 0.05
    cap_s: float = 5.0

    def delay_s(self, attempt: int, rand: float | None = None) -> float:
        """``rand`` in [0, 1) picks the point in the window; random when None."""
        if attempt < 1:
            return 0.0
        window = min(self.cap_s, self.base_s * float(2 ** min(attempt - 1, 30)))
        r = float(random.random() if rand is None else rand)
        # Never zero: a floor of a tenth of the base stops a hot loop even at r == 0.
        return max(self.base_s / 10, window * r)
