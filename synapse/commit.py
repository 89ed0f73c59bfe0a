"""Apply a plan: one atomic round trip writes every copy and acknowledges the batch.

The commit is a Lua script, so on a single Redis (or one hash slot) the writes
and the XACK are applied together or not at all, whatever instant the router is
killed at. MULTI/EXEC would not do: it has no rollback, so a WRONGTYPE on one
destination would still let the XACK through. The script instead checks every
destination of an entry first; an entry with a destination it cannot write is
neither written nor acknowledged (it stays pending, is retried after
``claim_idle_ms``, and after ``max_deliveries`` is dead-lettered with reason
``destination_error``), while the rest of the batch commits. The ``#!lua``
shebang (no ``allow-oom``) makes a server over ``maxmemory`` refuse the whole
script before any write.

Each entry is acknowledged before its copies are written, and written only if
that XACK found it still pending: a commit is applied at most once per entry.
So a commit whose reply was lost (timeout, dropped connection) may be re-run,
and a router that stalled past ``claim_idle_ms`` while another one reclaimed and
committed its entries writes nothing twice; such entries come back as
``skipped``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from redis.exceptions import NoScriptError, ResponseError

from synapse import wire
from synapse.keys import F_ID, F_ROUTE, F_SOURCE
from synapse.plan import BatchPlan

COMMIT_LUA = """#!lua
-- ARGV: group, entry count, then the provenance field names and the source:
--   F_SOURCE, source, F_ID, F_ROUTE; then per entry: id, write count, and per write:
--   key index, maxlen ('0': none), route ('': no provenance fields), field count, fields.
-- A field count of -1 reuses the fields of the entry's previous write (a copy's
-- fields travel once per entry, however wide the fan-out).
local group = ARGV[1]
local n = tonumber(ARGV[2])
local f_source, source, f_id, f_route = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local types = {}
local failed = {}
local skipped = {}
local i = 7
for e = 1, n do
  local id = ARGV[i]
  local nw = tonumber(ARGV[i + 1])
  i = i + 2
  local first = i
  local bad = nil
  for w = 1, nw do
    local k = tonumber(ARGV[i])
    local t = types[k]
    if t == nil then
      t = redis.call('TYPE', KEYS[k])['ok']
      types[k] = t
    end
    if t ~= 'stream' and t ~= 'none' then
      bad = KEYS[k] .. ' holds a ' .. t .. ', not a stream'
    end
    local nf = tonumber(ARGV[i + 3])
    if nf > 0 then i = i + 4 + nf else i = i + 4 end
  end
  if bad then
    failed[#failed + 1] = id
    failed[#failed + 1] = bad
  elseif redis.call('XACK', KEYS[1], group, id) == 0 then
    skipped[#skipped + 1] = id -- committed already (a re-run, or a stale router)
  else
    i = first
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
      if route ~= '' then
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
        if maxlen == '0' then
          redis.call('XADD', KEYS[k], '*', unpack(copy, 1, fcount + 6))
        else
          redis.call('XADD', KEYS[k], 'MAXLEN', '~', maxlen, '*', unpack(copy, 1, fcount + 6))
        end
      elseif maxlen == '0' then
        redis.call('XADD', KEYS[k], '*', unpack(ARGV, fstart, fstart + fcount - 1))
      else
        redis.call('XADD', KEYS[k], 'MAXLEN', '~', maxlen, '*',
          unpack(ARGV, fstart, fstart + fcount - 1))
      end
      types[k] = 'stream'
    end
  end
end
return {failed, skipped}
"""

COMMIT_SHA = hashlib.sha1(COMMIT_LUA.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CommitResult:
    """Entries the script could not write (left pending), with the reason; and entries
    it found acknowledged already (committed before: nothing written)."""

    failed: dict[bytes, str]
    skipped: frozenset[bytes] = frozenset()


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
    """Apply ``plan`` atomically; raise on a Redis or connection error (nothing applied)."""
    if not plan.entries:
        return CommitResult({})
    keys, argv = encode(plan, group)
    try:
        reply = await wire.execute(client, "EVALSHA", COMMIT_SHA, len(keys), *keys, *argv)
    except NoScriptError:
        reply = await wire.execute(client, "EVAL", COMMIT_LUA, len(keys), *keys, *argv)
    except ResponseError as exc:
        if "NOSCRIPT" not in str(exc):
            raise
        reply = await wire.execute(client, "EVAL", COMMIT_LUA, len(keys), *keys, *argv)
    bad, skipped = reply
    failed = {bad[i]: bad[i + 1].decode("utf-8", "replace") for i in range(0, len(bad), 2)}
    return CommitResult(failed, frozenset(skipped))
