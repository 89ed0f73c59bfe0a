"""Outcomes of handled entries, written behind the handlers in few round trips.

A handler's outcome is one of: acknowledge; mark as handled (``dedupe_s``) and
acknowledge; dead-letter and acknowledge. Workers queue outcomes here and a flusher
writes whatever has accumulated in one round trip per kind (plain acks as one XACK
per stream; marks and dead letters in one Lua script), so a busy subscriber pays
one round trip for many entries.

On a single Redis (or one slot) the mark and its ack, and the dead letter and its
ack, are applied together by the script. The script checks every dead-letter key's
type first (a script error does not undo earlier writes), acknowledges each entry
before writing its dead letter, and writes it only if that XACK found it pending,
so a flush whose reply was lost can be re-sent: nothing is written twice. On a
Redis Cluster (keys in several slots) the same steps run one command at a time, in
the order that loses nothing: the dead letter, then the ack (at least once).
Outcomes not written because Redis was unreachable are kept and re-sent.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from synapse import wire
from synapse.backoff import Backoff
from synapse.failures import REDIS_FAILURES

OUTCOME_LUA = """#!lua
-- KEYS: every key named below. ARGV: group, op count, then per op:
--   'm', stream key, id, mark key, ttl_ms        (mark, then ack)
--   'd', stream key, id, dlq key, n, n fields    (ack; dead letter if it was pending)
-- Key arguments are 1-based indexes into KEYS. Dead-letter keys that hold something
-- other than a stream are reported and their ops skipped (left pending).
local group = ARGV[1]
local n = tonumber(ARGV[2])
local bad = {}
local i = 3
for e = 1, n do
  local kind = ARGV[i]
  if kind == 'd' then
    local k = tonumber(ARGV[i + 3])
    if bad[k] == nil then
      local t = redis.call('TYPE', KEYS[k])['ok']
      bad[k] = (t ~= 'stream' and t ~= 'none')
    end
    i = i + 5 + tonumber(ARGV[i + 4])
  else
    i = i + 5
  end
end
local refused = {}
local written = 0
i = 3
for e = 1, n do
  local kind, s, id = ARGV[i], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2]
  if kind == 'm' then
    redis.call('SET', KEYS[tonumber(ARGV[i + 3])], '1', 'PX', ARGV[i + 4])
    redis.call('XACK', s, group, id)
    i = i + 5
  else
    local k, nf = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
    local first = i + 5
    i = first + nf
    if bad[k] then
      refused[#refused + 1] = id
    elseif redis.call('XACK', s, group, id) == 1 then
      redis.call('XADD', KEYS[k], '*', unpack(ARGV, first, first + nf - 1))
      written = written + 1
    end
  end
end
return {written, refused}
"""

FAILURES = REDIS_FAILURES


@dataclass(frozen=True, slots=True)
class Outcome:
    """One entry's outcome: ``mark`` (key, ttl_ms) and/or ``dead`` (stream, fields).

    ``written``, when given, is resolved once the outcome is on the server.
    """

    stream: str
    entry_id: bytes
    mark: tuple[str, int] | None = None
    dead: tuple[str, list[bytes]] | None = None
    written: asyncio.Future[None] | None = None


class Acks:
    """Queued outcomes for one consumer group, written by ``run`` in the background.

    ``write`` is the store's part (``kafka_acks.KafkaAcks`` overrides it); ``failures``
    are the errors after which the same outcomes are re-sent.
    """

    failures: tuple[type[BaseException], ...] = FAILURES
    #: How long a woken flusher lets outcomes gather before writing them (0 on Redis,
    #: where an XACK is cheap; a Kafka offset commit is a broker round trip).
    linger_s = 0.0

    def __init__(
        self, client: wire.Client, group: str, *, cluster: bool, log: Any, backoff: Backoff
    ) -> None:
        self.client = client
        self.group = group
        self.cluster = cluster
        self.log = log
        self.backoff = backoff
        self.refused = 0  # dead letters refused by their stream's type (left pending)
        self._queued: list[Outcome] = []
        self._plain: dict[str, list[bytes]] = defaultdict(list)  # plain acks, per stream
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._script: Any = None

    def ack(self, stream: str, entry_id: bytes) -> None:
        """Acknowledge one entry (no mark, no dead letter)."""
        self._plain[stream].append(entry_id)
        if not self._wake.is_set():
            self._idle.clear()
            self._wake.set()

    def add(self, outcome: Outcome) -> None:
        self._queued.append(outcome)
        self._idle.clear()
        self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self._queued) + sum(len(ids) for ids in self._plain.values())

    async def flushed(self) -> None:
        """Wait until every outcome queued so far is written."""
        await self._idle.wait()

    async def run(self, stopping: asyncio.Event) -> None:
        """Write outcomes as they come, until ``stopping`` and nothing is left to write."""
        attempt = 0
        while True:
            if not self._queued and not self._plain:
                self._idle.set()
                if stopping.is_set():
                    return
                wake = asyncio.ensure_future(self._wake.wait())
                stop = asyncio.ensure_future(stopping.wait())
                await asyncio.wait({wake, stop}, return_when=asyncio.FIRST_COMPLETED)
                wake.cancel()
                stop.cancel()
                if self.linger_s and not stopping.is_set():
                    await asyncio.sleep(self.linger_s)
                continue
            self._wake.clear()
            ops, self._queued = self._queued, []
            plain, self._plain = self._plain, defaultdict(list)
            try:
                await self.write(plain, ops)
                attempt = 0
                for op in ops:
                    if op.written is not None and not op.written.done():
                        op.written.set_result(None)
            except self.failures as exc:
                self._queued[:0] = ops  # kept, in order: every op is safe to re-send
                for stream, ids in plain.items():
                    self._plain[stream][:0] = ids
                attempt += 1
                if attempt == 1:
                    self.log.warning("outcomes_unwritten", error=str(exc), entries=len(ops))
                await asyncio.sleep(self.backoff.delay_s(attempt))

    async def write(self, plain: dict[str, list[bytes]], ops: list[Outcome]) -> None:
        """Write plain acks as one XACK per stream, marks and dead letters by the script."""
        for stream, ids in plain.items():
            await wire.execute(self.client, "XACK", stream, self.group, *ids)
        if ops:
            if self.cluster:
                await self._write_apart(ops)
            else:
                await self._write_script(ops)

    async def _write_script(self, ops: list[Outcome]) -> None:
        index: dict[str, int] = {}
        keys: list[str] = []

        def key(name: str) -> int:
            found = index.get(name)
            if found is None:
                keys.append(name)
                found = index[name] = len(keys)
            return found

        argv: list[Any] = [self.group, len(ops)]
        for op in ops:
            if op.mark is not None:
                argv += ("m", key(op.stream), op.entry_id, key(op.mark[0]), op.mark[1])
            if op.dead is not None:
                dlq, fields = op.dead
                argv += ("d", key(op.stream), op.entry_id, key(dlq), len(fields), *fields)
        if self._script is None:
            self._script = self.client.register_script(OUTCOME_LUA)
        _, refused = await self._script(keys=keys, args=argv)
        if refused:
            self.refused += len(refused)
            self.log.error("dead_letter_refused", entries=len(refused), keys=keys)

    async def _write_apart(self, ops: list[Outcome]) -> None:
        """On a cluster: one command at a time, dead letter before its ack (at least once)."""
        for op in ops:
            if op.mark is not None:
                await self.client.set(op.mark[0], b"1", px=op.mark[1])
            if op.dead is not None:
                dlq, fields = op.dead
                await wire.execute(self.client, "XADD", dlq, "*", *fields)
            await wire.execute(self.client, "XACK", op.stream, self.group, op.entry_id)
