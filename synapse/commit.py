"""Apply a plan: one atomic round trip writes every copy and acknowledges the batch.

The commit is a Lua script, so on a single Redis (or one hash slot) the writes
and the XACK are applied together or not at all, whatever instant the router is
killed at. MULTI/EXEC would not do: it has no rollback, so a WRONGTYPE on one
destination would still let the XACK through.

No write error can leave an acknowledged entry with a missing copy. Per entry
the script first checks every destination's type, then writes every copy with
``redis.pcall`` (so an XADD that fails does not abort the script), and only when
all of them landed acknowledges the entry. If any write failed (wrong type,
exhausted IDs, an ACL that refuses the key, ...) the copies of that entry that did
land are deleted again (XDEL) in the same script, and the entry is neither written
nor acknowledged: it comes back in ``failed`` with the error of each refused
destination (``refused``), stays pending and is retried (``retry.py``). Every way an
XADD can fail inside the script, and why none can leave a partial fan-out:

- WRONGTYPE: ruled out before any write (TYPE of each destination);
- exhausted IDs (a stream whose last id is 18446744073709551615-18446744073709551615),
  NOPERM (ACL on the key), any other per-key error: caught by pcall, copies rolled back;
- retention: trimming is one ``XTRIM MAXLEN ~`` per destination after the batch's
  writes and acks, never part of a copy's XADD (a trim that fails loses nothing);
- OOM, READONLY, LOADING, MASTERDOWN, NOREPLICAS: the ``#!lua`` shebang (no
  ``allow-oom``) makes the server refuse the whole script before its first write,
  and a script that has written is never stopped for memory: an outage, not an
  entry's failure;
- too many arguments for Lua's stack: ``max_fields`` is capped so no copy or dead
  letter can reach it.

Each entry is acknowledged after its copies are written, and if that XACK finds it
acknowledged already (a commit whose reply was lost and is run again, or a router
that stalled past ``claim_idle_ms`` while another one reclaimed and committed its
entries) the copies just written are deleted again: a commit is applied at most
once per entry; such entries come back as ``skipped``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from redis.exceptions import NoPermissionError, ResponseError

from synapse import wire
from synapse.backend import CommitResult
from synapse.errors import Failure
from synapse.failures import classify
from synapse.keys import F_ID, F_ROUTE, F_SOURCE
from synapse.plan import BatchPlan

COMMIT_LUA = """#!lua
-- ARGV: group, entry count, then the provenance field names and the source:
--   F_SOURCE, source, F_ID, F_ROUTE; then per entry: id, write count, and per write:
--   key index, maxlen ('0': none), route ('': no provenance fields), field count, fields.
-- A field count of -1 reuses the fields of the entry's previous write (a copy's
-- fields travel once per entry, however wide the fan-out).
-- Returns {failed, skipped}: failed = {id, {key, error, key, error...}, ...}.
local group = ARGV[1]
local n = tonumber(ARGV[2])
local f_source, source, f_id, f_route = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local types = {}
local fresh = {}
local trims = {}
local failed = {}
local skipped = {}
local i = 7
local function refused(errs, k, why)
  errs = errs or {}
  errs[#errs + 1] = KEYS[k]
  errs[#errs + 1] = why
  return errs
end
for e = 1, n do
  local id = ARGV[i]
  local nw = tonumber(ARGV[i + 1])
  i = i + 2
  local errs = nil
  do
    local written = {}
    local fstart, fcount, copy = 0, 0, nil
    for w = 1, nw do
      local k = tonumber(ARGV[i])
      local maxlen = ARGV[i + 1]
      local route = ARGV[i + 2]
      local nf = tonumber(ARGV[i + 3])
      i = i + 4
      if nf >= 0 then
        fstart, fcount, copy = i, nf, nil
        i = i + nf
      end
      local t = types[k]
      if t == nil then
        -- WRONGTYPE is ruled out before the first write to a key (cached per batch)
        local r = redis.pcall('TYPE', KEYS[k])
        if r['err'] then t = r['err'] else t = r['ok'] end
        if t ~= 'stream' and t ~= 'none' and not r['err'] then
          t = KEYS[k] .. ' holds a ' .. t .. ', not a stream'
        end
        types[k] = t
        fresh[k] = (t == 'none')
      end
      local r
      if t ~= 'stream' and t ~= 'none' then
        r = {err = t}
      elseif route ~= '' then
        -- one table per entry: its fields, then the provenance; only the route changes
        if copy == nil then
          copy = {unpack(ARGV, fstart, fstart + fcount - 1)}
          copy[fcount + 1] = f_source
          copy[fcount + 2] = source
          copy[fcount + 3] = f_id
          copy[fcount + 4] = id
          copy[fcount + 5] = f_route
        end
        copy[fcount + 6] = route
        r = redis.pcall('XADD', KEYS[k], '*', unpack(copy, 1, fcount + 6))
      else
        r = redis.pcall('XADD', KEYS[k], '*', unpack(ARGV, fstart, fstart + fcount - 1))
      end
      if type(r) == 'table' then
        errs = refused(errs, k, r['err'])
      else
        written[#written + 1] = k
        written[#written + 1] = r
        types[k] = 'stream'
        if maxlen ~= '0' then trims[k] = maxlen end
      end
    end
    local acked = 0
    if errs == nil then
      acked = redis.pcall('XACK', KEYS[1], group, id)
      if type(acked) == 'table' then
        errs = refused(errs, 1, acked['err'])
        acked = 0
      elseif acked == 0 then
        skipped[#skipped + 1] = id -- committed already (a re-run, or a stale router)
      end
    end
    if acked == 0 then
      -- not acknowledged by this script: none of its copies may stay (nor a stream
      -- that only this entry's copy created)
      for x = 1, #written, 2 do
        local k = written[x]
        redis.pcall('XDEL', KEYS[k], written[x + 1])
        if fresh[k] and redis.call('XLEN', KEYS[k]) == 0 then
          redis.call('DEL', KEYS[k])
          types[k] = 'none'
        end
      end
    end
  end
  if errs then
    failed[#failed + 1] = id
    failed[#failed + 1] = errs
  end
end
for k, maxlen in pairs(trims) do
  redis.pcall('XTRIM', KEYS[k], 'MAXLEN', '~', maxlen)
end
return {failed, skipped}
"""

COMMIT_SHA = hashlib.sha1(COMMIT_LUA.encode()).hexdigest()


def encode(plan: BatchPlan, group: str) -> tuple[list[bytes | str], list[bytes | str | int]]:
    """KEYS and ARGV of the commit script for ``plan``.

    The copies of a routed entry share their source fields (``Write.base``): they
    are sent once per entry and the script appends each copy's provenance.
    """
    src = plan.source.encode()
    key_index: dict[str, int] = {plan.source: 1}
    keys: list[bytes | str] = [plan.source]
    argv: list[bytes | str | int] = [group, len(plan.entries), F_SOURCE, src, F_ID, F_ROUTE]
    for entry in plan.entries:
        entry_id = entry.entry_id
        argv += (entry_id, len(entry.writes))
        previous: list[bytes] | None = None
        for write in entry.writes:
            index = key_index.get(write.stream)
            if index is None:
                index = key_index[write.stream] = len(keys) + 1
                keys.append(write.stream)
            prov = write.provenance
            if prov is not None and prov[0] == src and prov[1] == entry_id and prov[2]:
                route, fields = prov[2], write.base
            else:
                route, fields = b"", write.fields
            if fields is previous:
                argv += (index, write.maxlen or 0, route, -1)
                continue
            count = len(fields) // 2 * 2
            argv += (index, write.maxlen or 0, route, count)
            argv += fields if count == len(fields) else fields[:count]
            previous = fields
    return keys, argv


async def commit(client: wire.Client, plan: BatchPlan, group: str) -> CommitResult:
    """Apply ``plan`` atomically; raise on a Redis or connection error (nothing applied).

    An ACL that refuses a destination key refuses the whole script before it runs
    (NOPERM for a declared key): the keys it refuses are then found one by one and
    the entries writing to them come back as ``failed``, while the rest commits.
    """
    if not plan.entries:
        return CommitResult({})
    keys, argv = encode(plan, group)
    try:
        reply = await _run(client, keys, argv)
    except NoPermissionError as exc:
        denied = await _denied(client, keys, group)
        if not denied or plan.source in denied:
            raise  # the source itself (or the script): nothing this batch can do
        return await _without(client, plan, group, denied, str(exc))
    return result_of(reply)


async def _run(client: wire.Client, keys: list[bytes | str], argv: list[bytes | str | int]) -> Any:
    try:
        return await wire.execute(client, "EVALSHA", COMMIT_SHA, len(keys), *keys, *argv)
    except ResponseError as exc:
        if classify(exc) != Failure.NO_SCRIPT:
            raise
        return await wire.execute(client, "EVAL", COMMIT_LUA, len(keys), *keys, *argv)


async def _denied(client: wire.Client, keys: list[bytes | str], group: str) -> set[str]:
    """The destination keys the ACL refuses to the script: an empty commit per key."""
    denied: set[str] = set()
    empty: list[bytes | str | int] = [group, 0, F_SOURCE, b"", F_ID, F_ROUTE]
    for key in keys[1:]:
        try:
            await _run(client, [keys[0], key], empty)
        except NoPermissionError:
            denied.add(key.decode() if isinstance(key, bytes) else key)
    return denied


async def _without(
    client: wire.Client, plan: BatchPlan, group: str, denied: set[str], error: str
) -> CommitResult:
    """Commit the entries that write no ``denied`` key; the others fail with ``error``."""
    refused = {
        e.entry_id: {w.stream: f"NOPERM {error}" for w in e.writes if w.stream in denied}
        for e in plan.entries
        if any(w.stream in denied for w in e.writes)
    }
    rest = tuple(e for e in plan.entries if e.entry_id not in refused)
    done = await commit(client, BatchPlan(plan.source, rest), group)
    failed = {**done.failed, **{eid: _summary(dests) for eid, dests in refused.items()}}
    return CommitResult(failed, done.skipped, {**done.refused, **refused})


def result_of(reply: list[list[bytes]]) -> CommitResult:
    """The script's reply as a ``CommitResult``."""
    bad, skipped = reply
    if not bad:
        return CommitResult({}, frozenset(skipped))
    refused: dict[bytes, dict[str, str]] = {}
    for i in range(0, len(bad), 2):
        errs: list[bytes] = bad[i + 1]  # type: ignore[assignment]
        refused[bad[i]] = {_text(errs[j]): _text(errs[j + 1]) for j in range(0, len(errs) - 1, 2)}
    failed = {eid: _summary(dests) for eid, dests in refused.items()}
    return CommitResult(failed, frozenset(skipped), refused)


def _summary(dests: dict[str, str]) -> str:
    """The first refusal as one line naming its destination."""
    for dest, error in dests.items():
        return error if dest in error else f"{dest}: {error}"
    return "refused"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
