"""The ledger checker itself: it must see a loss, a duplicate and a misroute when there is one."""

from __future__ import annotations

import pytest
import redis

from tests.reliability.ledger import (
    LEDGER_FIELD,
    Ledger,
    check,
    produce,
    quiescent,
    wait_quiescent,
)


def test_checker_counts_lost_duplicated_unexpected(r: redis.Redis) -> None:
    """Hand-made damage (one missing, one doubled, one misrouted copy) is counted exactly."""
    ledger = Ledger()
    events = [({"type": "t", "n": str(i)}, {"dest-a"}) for i in range(4)]
    produce(r, ledger, "src", events)
    ids = [f[LEDGER_FIELD] for _, f in r.xrange("src")]
    r.xadd("dest-a", {LEDGER_FIELD: ids[0]})  # ids[1] lost
    r.xadd("dest-a", {LEDGER_FIELD: ids[2]})
    r.xadd("dest-a", {LEDGER_FIELD: ids[2]})  # duplicated
    r.xadd("dest-a", {LEDGER_FIELD: ids[3]})
    r.xadd("dest-b", {LEDGER_FIELD: ids[3]})  # unexpected
    r.xadd("synapse:dlq", {LEDGER_FIELD: ids[1] + b"x"})  # never produced
    report = check(r, ledger, ["dest-a", "dest-b"])
    assert (report.events, report.lost, report.duplicated, report.unexpected) == (4, 1, 1, 2)
    assert report.duplicated_in == {"dest-a": 1}
    assert not report.clean


def test_duplicates_are_counted_per_stream(r: redis.Redis) -> None:
    """Extra copies are counted in the stream holding them, so a test can bound each route."""
    ledger = Ledger()
    produce(r, ledger, "src", [({"type": "t"}, {"dest-a", "dest-b"})] * 2)
    first, second = (f[LEDGER_FIELD] for _, f in r.xrange("src"))
    for lid in (first, first, first, second):
        r.xadd("dest-a", {LEDGER_FIELD: lid})
    for lid in (first, second, second):
        r.xadd("dest-b", {LEDGER_FIELD: lid})
    report = check(r, ledger, ["dest-a", "dest-b"])
    assert report.duplicated_in == {"dest-a": 2, "dest-b": 1}
    assert report.duplicated == 3 and report.lost == 0


def test_dead_lettered_event_is_not_lost(r: redis.Redis) -> None:
    """An event found in the dead-letter stream instead of its destination counts as handled."""
    ledger = Ledger()
    produce(r, ledger, "src", [({"type": "t"}, {"dest-a"})])
    [(_, fields)] = r.xrange("src")
    r.xadd("synapse:dlq", {LEDGER_FIELD: fields[LEDGER_FIELD]})
    report = check(r, ledger, ["dest-a"])
    assert report.clean and report.dead_lettered == 1


def test_quiescence_waits_for_group_to_read_and_ack(r: redis.Redis) -> None:
    """wait_quiescent fails while entries are unread or pending, passes once all are acked."""
    r.xgroup_create("src", "g", "0", mkstream=True)
    r.xadd("src", {"a": "1"})
    with pytest.raises(AssertionError, match="not quiescent"):
        wait_quiescent(r, ["src"], "g", timeout_s=0.2)
    [[_, [(eid, _)]]] = r.xreadgroup("g", "c", {"src": ">"})
    assert not quiescent(r, ["src"], "g")  # read, still pending
    r.xack("src", "g", eid)
    assert quiescent(r, ["src"], "g")
    wait_quiescent(r, ["src"], "g", timeout_s=2)
