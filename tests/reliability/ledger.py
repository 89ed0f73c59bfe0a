"""A ledger of produced events, and the checker that finds lost, duplicated and misrouted ones.

Producers tag every event with a unique ``ledger-id`` field and say where the
routing table must put it (its destination streams, or the dead-letter stream).
After quiescence (``wait_quiescent``: nothing pending, nothing unread), ``check``
reads every destination and the dead-letter stream and counts:

- LOST: acknowledged by Redis at XADD, yet missing from one of its expected
  destinations and not in the dead-letter stream either (a partial fan-out is a loss);
- DUPLICATED: extra copies of one event in one stream;
- UNEXPECTED: a copy in a stream the table does not route it to (or an id never produced).

The API is plain functions over a sync ``redis.Redis`` (or ``RedisCluster``) client so
the cluster tests can reuse it.
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from synapse.config import RoutingTable
from synapse.plan import DEAD_LETTER, ROUTED, Planner
from tests.support.polling import wait_sync

LEDGER_FIELD = b"ledger-id"

Fields = Mapping[str | bytes, str | bytes]


@dataclass(frozen=True, slots=True, kw_only=True)
class Sent:
    """One produced event: its id, its source, and the streams it must reach."""

    ledger_id: bytes
    source: str
    expect: frozenset[str]


@dataclass
class Ledger:
    """Every event a test tried to produce, and which ones Redis acknowledged."""

    attempted: dict[bytes, Sent] = field(default_factory=dict)
    acked: set[bytes] = field(default_factory=set)
    _counter: itertools.count[int] = field(default_factory=itertools.count)
    _run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def tag(self, source: str, fields: Fields, expect: Iterable[str]) -> dict[Any, Any]:
        """Record an attempt; return ``fields`` with a fresh ledger id added."""
        ledger_id = f"{self._run}-{next(self._counter)}".encode()
        self.attempted[ledger_id] = Sent(
            ledger_id=ledger_id, source=source, expect=frozenset(expect)
        )
        return {**fields, LEDGER_FIELD: ledger_id}


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """What ``check`` found; ``clean`` when nothing was lost, duplicated or misrouted."""

    events: int  # acknowledged by Redis at XADD
    unacknowledged: int  # XADD sent, reply lost (may or may not exist)
    copies: int  # entries carrying a ledger id, over every stream read
    dead_lettered: int  # events found in the dead-letter stream
    lost: int
    duplicated: int
    duplicated_in: dict[str, int]  # extra copies per stream (only streams that have some)
    unexpected: int
    examples: dict[str, list[str]]

    @property
    def clean(self) -> bool:
        return self.lost == self.duplicated == self.unexpected == 0

    def line(self, scenario: str) -> str:
        return (
            f"LEDGER {scenario}: events={self.events} unacknowledged={self.unacknowledged} "
            f"copies={self.copies} dead_lettered={self.dead_lettered} lost={self.lost} "
            f"duplicated={self.duplicated} unexpected={self.unexpected}"
        )


def expect_of(table: RoutingTable, source: str, fields: Fields) -> frozenset[str]:
    """Where ``table`` sends this entry on its first delivery (destinations, or the DLQ)."""
    flat: list[bytes] = []
    for name, value in fields.items():
        flat += (_b(name), _b(value))
    planned = Planner(table).plan_entry(source, source.encode(), b"0-1", flat, 1, 0)
    if planned.outcome in (ROUTED, DEAD_LETTER):
        return frozenset(w.stream for w in planned.writes)
    return frozenset()


def produce(
    client: Any,
    ledger: Ledger,
    source: str,
    events: Iterable[tuple[Fields, Iterable[str]]],
    chunk: int = 500,
) -> int:
    """XADD ``events`` (fields, expected streams) in pipelined chunks; return how many acked.

    A chunk whose pipeline fails (server gone) counts as attempted, not acknowledged:
    its entries may or may not exist. The error is raised after recording.
    """
    done = 0
    batch: list[dict[Any, Any]] = []
    for fields, expect in events:
        batch.append(ledger.tag(source, fields, expect))
        if len(batch) >= chunk:
            done += _send(client, ledger, source, batch)
            batch = []
    if batch:
        done += _send(client, ledger, source, batch)
    return done


def _send(client: Any, ledger: Ledger, source: str, batch: list[dict[Any, Any]]) -> int:
    pipe = client.pipeline(transaction=False)
    for fields in batch:
        pipe.xadd(source, fields)
    pipe.execute()
    ledger.acked.update(f[LEDGER_FIELD] for f in batch)
    return len(batch)


def group_state(client: Any, source: str, group: str) -> tuple[int, bool] | None:
    """(pending, all read) for ``group`` on ``source``; None when the group is missing."""
    try:
        groups = client.xinfo_groups(source)
        last = client.xinfo_stream(source)["last-generated-id"]
    except Exception:  # no such stream yet
        return None
    for info in groups:
        name = info["name"]
        if (name.decode() if isinstance(name, bytes) else name) == group:
            delivered = info["last-delivered-id"]
            return int(info["pending"]), _id(delivered) >= _id(last)
    return None


def quiescent(client: Any, sources: Iterable[str], group: str) -> bool:
    """Whether every source's group has read everything and has nothing pending (no wait)."""
    return all(group_state(client, s, group) == (0, True) for s in sources)


def wait_quiescent(
    client: Any, sources: Iterable[str], group: str, timeout_s: float = 60.0
) -> None:
    """Wait until every source's group has read everything and has nothing pending."""
    names = list(sources)

    def states() -> str:
        found = {s: group_state(client, s, group) for s in names}
        return f"quiescence (not quiescent: {found})"

    wait_sync(lambda: quiescent(client, names, group), timeout_s, states, step_s=0.05)


def read_ids(client: Any, stream: str, chunk: int = 10_000) -> Counter[bytes]:
    """Ledger ids of every entry in ``stream`` (with multiplicity)."""
    found: Counter[bytes] = Counter()
    start = "-"
    while True:
        rows = client.xrange(stream, start, "+", count=chunk)
        for _, fields in rows:
            lid = fields.get(LEDGER_FIELD) or fields.get(LEDGER_FIELD.decode())
            if lid is not None:
                found[_b(lid)] += 1
        if len(rows) < chunk:
            return found
        start = "(" + _s(rows[-1][0])


def check(
    client: Any, ledger: Ledger, streams: Iterable[str], dead_letter: str = "synapse:dlq"
) -> Report:
    """Read ``streams`` (every destination of the table) and the DLQ; count the damage."""
    names = set(streams) | {dead_letter}
    for sent in ledger.attempted.values():
        names |= sent.expect
    seen = {name: read_ids(client, name) for name in sorted(names)}
    dlq = seen[dead_letter]
    lost: list[str] = []
    duplicated: list[str] = []
    unexpected: list[str] = []
    dup_in: Counter[str] = Counter()
    for stream, ids in seen.items():
        for lid, count in ids.items():
            sent = ledger.attempted.get(lid)
            if count > 1:
                dup_in[stream] += count - 1
                duplicated.append(f"{lid.decode()} x{count} in {stream}")
            if sent is None:
                unexpected.append(f"{lid.decode()} (never produced) in {stream}")
            elif stream not in sent.expect and stream != dead_letter:
                unexpected.append(f"{lid.decode()} in {stream}")
    for lid in ledger.acked:
        sent = ledger.attempted[lid]
        if lid in dlq:
            continue
        missing = [s for s in sorted(sent.expect) if lid not in seen[s]]
        if missing:
            lost.append(f"{lid.decode()} missing from {missing}")
    return Report(
        events=len(ledger.acked),
        unacknowledged=len(ledger.attempted) - len(ledger.acked),
        copies=sum(sum(ids.values()) for ids in seen.values()),
        dead_lettered=len(dlq),
        lost=len(lost),
        duplicated=sum(dup_in.values()),
        duplicated_in=dict(dup_in),
        unexpected=len(unexpected),
        examples={"lost": lost[:5], "duplicated": duplicated[:5], "unexpected": unexpected[:5]},
    )


def _id(entry_id: bytes | str) -> tuple[int, int]:
    ms, _, seq = _s(entry_id).partition("-")
    return int(ms), int(seq or 0)


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _s(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
