"""Backoff: capped exponential delay with full jitter, never zero."""

from __future__ import annotations

import pytest

from synapse.backoff import Backoff


@pytest.mark.parametrize(
    ("attempt", "rand", "expected_s"),
    [
        (1, 0.999, 0.05 * 0.999),  # the window starts at base
        (2, 0.5, 0.05),  # doubles: 0.1 * 0.5
        (4, 1.0, 0.4),  # 0.05 * 2**3
        (8, 1.0, 5.0),  # capped
        (10_000, 1.0, 5.0),  # huge attempts stay capped (no overflow)
        (3, 0.0, 0.005),  # never zero: a tenth of the base at r == 0
        (0, 0.7, 0.0),  # no attempt yet: no wait
    ],
)
def test_delay_s_table(attempt: int, rand: float, expected_s: float) -> None:
    """delay_s follows min(cap, base * 2**(attempt-1)) * rand, floored at base/10."""
    assert Backoff().delay_s(attempt, rand) == pytest.approx(expected_s)


def test_random_jitter_stays_in_the_window() -> None:
    """Without ``rand`` the delay is drawn in [base/10, window] for every attempt."""
    backoff = Backoff(base_s=0.1, cap_s=2.0)
    for attempt in range(1, 12):
        window = min(2.0, 0.1 * 2 ** (attempt - 1))
        for _ in range(50):
            assert 0.01 <= backoff.delay_s(attempt) <= window
