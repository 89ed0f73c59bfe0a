"""Before a redrive: how many dead letters would fail the same way again under the current table.

A dead letter redriven to a source is read by the router again, and the router's verdict on it
is a pure function of its fields and the table: ``Planner.plan_entry``, the dry run that
``synapse route`` and ``synapse test`` use. Run on each selected dead letter's redriven fields,
it says which would come straight back with the same reason (the schema or the route still
missing), so an operator fixes the table first instead of cycling entries through the
dead-letter stream. Failures the table cannot predict (a destination refusing writes) are not
counted: the preview says what it knows.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from synapse import keys
from synapse.cli import common
from synapse.cli.deadletter import Selection, redrive_fields, target_of
from synapse.cli.dlqstore import DeadLetters
from synapse.cli.progress import Progress
from synapse.config import RoutingTable
from synapse.plan import DEAD_LETTER, Planner


@dataclass(slots=True)
class Again:
    """The preview's tally: selected dead letters checked, and those that would fail again."""

    checked: int = 0
    same: Counter[str] = field(default_factory=Counter)  # reason -> would fail the same way
    other: Counter[str] = field(default_factory=Counter)  # new reason -> would fail otherwise

    def as_json(self) -> dict[str, object]:
        return {
            "checked": self.checked,
            "same_reason": self.same.total(),
            "by_reason": dict(self.same),
            "other_reason": dict(self.other),
        }

    def line(self) -> str | None:
        """One line for stderr, or None when nothing would fail again."""
        if not self.same and not self.other:
            return None
        parts = []
        if self.same:
            reasons = ", ".join(f"{r} {n}" for r, n in self.same.most_common())
            parts.append(
                f"{self.same.total()} of {common.plural(self.checked, 'dead letter')} would be "
                f"dead-lettered again the same way under the current table ({reasons})"
            )
        if self.other:
            reasons = ", ".join(f"{r} {n}" for r, n in self.other.most_common())
            parts.append(f"{self.other.total()} for another reason ({reasons})")
        return "note: " + "; ".join(parts) + ": fix the table or schemas first, or narrow with --id"


class Preview:
    """Checks dead letters one at a time against one compiled planner (no Redis)."""

    def __init__(self, table: RoutingTable) -> None:
        self.table = table
        self.planner = Planner(table)
        self.now_ms = int(time.time() * 1000)
        self.again = Again()

    def check(self, reason: str, dest: str, fields: list[bytes]) -> None:
        """Count one dead letter (with ``reason``) redriven to ``dest`` with ``fields``."""
        if not any(test(dest) for test in self.table.source_globs):
            return  # not read by the router (a recorded destination, a --to elsewhere)
        self.again.checked += 1
        plan = self.planner.plan_entry(dest, dest.encode(), b"0-1", fields, 1, self.now_ms)
        if plan.outcome != DEAD_LETTER:
            return
        if plan.reason == reason:
            self.again.same[reason] += 1
        else:
            self.again.other[plan.reason or "?"] += 1


def first_pass(
    letters: DeadLetters,
    chosen: Selection,
    ids: tuple[str, ...],
    target: str | None,
    table: RoutingTable | None,
    limit: int | None,
    progress: Progress,
) -> Again | None:
    """A first pass over the selection: the preview (with a table) and the bar's total."""
    if table is None and not progress.shown:
        return None
    preview = Preview(table) if table is not None else None
    total = 0
    for letter in letters.select(chosen, ids):
        if limit is not None and total >= limit:
            break
        total += 1
        if preview is None or letter.get(keys.F_TRUNCATED):
            continue
        dest, why = target_of(letter, target, table, letters.retry)
        if not why:
            preview.check(letter.get(keys.F_REASON), dest, redrive_fields(letter, target))
    progress.total = total
    return preview.again if preview is not None else None
