"""chores.every: a chore's timer, driven by the clock the caller passes."""

from __future__ import annotations

from synapse.chores import every


def test_due_at_once_then_once_per_interval() -> None:
    """A new timer is due at once; then only after its interval has passed since it ran."""
    timer = every(5.0)
    assert timer.due(100.0)
    assert not timer.due(100.0)
    assert not timer.due(104.9)
    assert timer.due(105.0)
    assert not timer.due(109.0)
    assert timer.due(110.5)


def test_ran_outside_its_schedule_postpones_the_next_run() -> None:
    """A chore run during set-up counts: the next run is an interval after it."""
    timer = every(2.0)
    timer.ran(50.0)
    assert not timer.due(51.0)
    assert timer.due(52.0)


def test_interval_change_applies_from_the_last_run() -> None:
    """A reload that shortens the interval makes the chore due sooner, from its last run."""
    timer = every(60.0)
    assert timer.due(0.0)
    assert not timer.due(10.0)
    timer.interval_s = 10.0
    assert timer.due(10.0)
