"""Commit a batch on Redis Cluster: atomic where one slot holds it all, else write then ack.

Entries whose every write shares the source's hash slot go through the same
atomic Lua commit as on a single server (``commit.py``); the others are written
with pipelined XADDs and acknowledged only after every write of the entry
succeeded, a refused or re-run entry's landed copies deleted again
(at-least-once across a crash; ``synapse-source`` + ``synapse-id`` are the dedupe
key). Both parts report ``failed``, ``refused`` and ``skipped`` alike, so an entry
committed before is counted once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError

from synapse.backend import CommitResult
from synapse.commit import commit
from synapse.plan import BatchPlan, EntryPlan
from synapse.slots import slot_of
from synapse.wire import Client


def is_atomic(source: str, entry: EntryPlan) -> bool:
    """Whether every write of ``entry`` shares ``source``'s hash slot."""
    home = slot_of(source)
    return all(slot_of(w.stream) == home for w in entry.writes)


async def commit_cluster(client: Client, plan: BatchPlan, group: str) -> CommitResult:
    """Commit ``plan`` on a cluster: atomic where one slot holds it all, else write then ack.

    Both parts report what the single-server commit reports: ``failed`` (left
    pending, with each refusing destination in ``refused``) and ``skipped``
    (acknowledged before: counted once, by the commit that acknowledged them).
    """
    if not plan.entries:
        return CommitResult({})
    atomic = tuple(e for e in plan.entries if is_atomic(plan.source, e))
    spread = [e for e in plan.entries if not is_atomic(plan.source, e)]
    failed: dict[bytes, str] = {}
    refused: dict[bytes, dict[str, str]] = {}
    skipped: set[bytes] = set()
    for part in (
        await commit(client, BatchPlan(plan.source, atomic), group) if atomic else None,
        await _write_then_ack(client, plan.source, spread, group) if spread else None,
    ):
        if part is not None:
            failed.update(part.failed)
            refused.update(part.refused)
            skipped.update(part.skipped)
    return CommitResult(failed, frozenset(skipped), refused)


async def _write_then_ack(
    client: Client, source: str, entries: Sequence[EntryPlan], group: str
) -> CommitResult:
    """XADD every copy (pipelined per node), then XACK the entries all of whose copies landed.

    An entry with a refused write is not acknowledged, and the copies of it that did
    land are deleted again, so its retry writes each copy once; likewise an entry
    whose XACK finds it acknowledged already (a re-run, a stale router) keeps none of
    this run's copies. Only a crash between the writes and the XACK (or the XDEL)
    leaves a copy that a retry writes again: at-least-once. A connection error raises
    before any XACK.
    """
    pipe = client.pipeline(transaction=False)
    owners: list[tuple[bytes, str]] = []
    for entry in entries:
        for write in entry.writes:
            trim = ("MAXLEN", "~", write.maxlen) if write.maxlen else ()
            pipe.execute_command("XADD", write.stream, *trim, "*", *write.fields)
            owners.append((entry.entry_id, write.stream))
    results = await pipe.execute(raise_on_error=False) if owners else []
    refused: dict[bytes, dict[str, str]] = {}
    landed: dict[bytes, list[tuple[str, Any]]] = {}
    for (owner, stream), result in zip(owners, results, strict=True):
        if isinstance(result, ResponseError):
            refused.setdefault(owner, {})[stream] = str(result)  # WRONGTYPE, NOPERM: this entry
        elif isinstance(result, Exception):
            raise result  # the connection: nothing acknowledged, the batch is retried
        else:
            landed.setdefault(owner, []).append((stream, result))
    done = [e.entry_id for e in entries if e.entry_id not in refused]
    skipped: set[bytes] = set()
    if done:
        acks = client.pipeline(transaction=False)
        for entry_id in done:
            acks.execute_command("XACK", source, group, entry_id)
        for entry_id, acked in zip(done, await acks.execute(), strict=True):
            if not int(acked):
                skipped.add(entry_id)
    undo = [c for eid in (*refused, *skipped) for c in landed.get(eid, ())]
    if undo:
        dels = client.pipeline(transaction=False)
        for stream, copy_id in undo:
            dels.execute_command("XDEL", stream, copy_id)
        await dels.execute(raise_on_error=False)
    failed = {eid: next(f"{d}: {e}" for d, e in dests.items()) for eid, dests in refused.items()}
    return CommitResult(failed, frozenset(skipped), refused)
