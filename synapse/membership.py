"""Many routers in one group: one live process per consumer name; long-gone names forgotten.

Routers sharing a group split the sources' new entries between them (XREADGROUP
hands each entry to one consumer) and reclaim each other's stuck entries with
XAUTOCLAIM. Two processes under one consumer name would break that: each would
re-process the other's in-flight entries as "its own pending" after a restart.
So a router holds a lease on its name, ``synapse:consumer:<group>:<name>``, a
key holding ``<host> <pid> <token>`` with a TTL that the routing loop renews.
A router whose name is leased by another live process refuses to start
(``ConsumerInUse``); a lease left by a dead process on the same host is taken
over at once, one from another host after its TTL.

Consumers idle longer than ``forget_idle_ms`` with no pending entries are
deleted from the group (XGROUP DELCONSUMER), with the check and the delete in
one Lua script so a consumer that comes back in between is never deleted with
entries pending.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from typing import Any

from synapse import keys
from synapse.errors import ConsumerInUse
from synapse.wire import Client

LEASE_TTL_MS = 15_000
FORGET_IDLE_MS = 3_600_000

# Take or renew the lease when free or ours; else return {holder, pttl}.
ACQUIRE_LUA = """
local v = redis.call('GET', KEYS[1])
if (not v) or v == ARGV[1] or v == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {}
end
return {v, redis.call('PTTL', KEYS[1])}
"""

RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Delete consumer ARGV[2] only if it has no pending entries and is idle >= ARGV[3] ms.
FORGET_LUA = """
for _, row in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #row, 2 do f[row[i]] = row[i + 1] end
  if f['name'] == ARGV[2] then
    if f['pending'] == 0 and f['idle'] >= tonumber(ARGV[3]) then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
      return 1
    end
    return 0
  end
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a lease, parsed from its value."""

    host: str
    pid: int
    token: str

    @classmethod
    def parse(cls, value: bytes) -> Holder:
        host, _, rest = value.decode("utf-8", "replace").partition(" ")
        pid, _, token = rest.partition(" ")
        return cls(host, int(pid) if pid.isdigit() else -1, token)

    def is_dead_here(self) -> bool:
        """A holder on this host whose process is gone (its lease can be taken now)."""
        if self.host != socket.gethostname() or self.pid <= 0 or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


class ConsumerLease:
    """The lease on one consumer name in one group."""

    def __init__(self, group: str, consumer: str, ttl_ms: int = LEASE_TTL_MS) -> None:
        self.key = keys.consumer_lease(group, consumer)
        self.group = group
        self.consumer = consumer
        self.ttl_ms = ttl_ms
        self.value = f"{socket.gethostname()} {os.getpid()} {secrets.token_hex(8)}".encode()

    async def acquire(self, client: Client) -> str | None:
        """Take or renew the lease; raise ConsumerInUse if a live process holds it.

        Returns the holder taken over from (a dead process on this host), if any.
        """
        reply: list[Any] = await client.eval(ACQUIRE_LUA, 1, self.key, self.value, self.ttl_ms, b"")
        if not reply:
            return None
        holder = Holder.parse(reply[0])
        if holder.is_dead_here():
            again: list[Any] = await client.eval(
                ACQUIRE_LUA, 1, self.key, self.value, self.ttl_ms, reply[0]
            )
            if not again:
                return f"{holder.host} pid {holder.pid}"
            holder = Holder.parse(again[0])
            reply = again
        raise ConsumerInUse(
            f"consumer name {self.consumer!r} in group {self.group!r} is in use by "
            f"{holder.host} pid {holder.pid} (its lease {self.key} expires in "
            f"{int(reply[1])} ms unless renewed); pick another with --consumer"
        )

    async def release(self, client: Client) -> None:
        """Drop the lease if it is still ours (a clean stop frees the name at once)."""
        await client.eval(RELEASE_LUA, 1, self.key, self.value)


async def forget_idle(
    client: Client, source: str, group: str, keep: str, idle_ms: int
) -> list[str]:
    """Delete consumers of ``group`` on ``source`` idle >= ``idle_ms`` with nothing pending.

    ``keep`` (this router) is never deleted; nor is a name whose lease is live.
    """
    rows = await client.xinfo_consumers(source, group)
    forgotten: list[str] = []
    for row in rows:
        name = _text(row.get("name"))
        if name == keep or int(row.get("pending") or 0) or int(row.get("idle") or 0) < idle_ms:
            continue
        if await client.exists(keys.consumer_lease(group, name)):
            continue
        if await forget(client, source, group, name, idle_ms):
            forgotten.append(name)
    return forgotten


async def forget(client: Client, source: str, group: str, name: str, idle_ms: int) -> bool:
    """Delete one consumer if (atomically checked) it has nothing pending and is idle enough."""
    done = await client.eval(FORGET_LUA, 1, source, group, name, idle_ms)
    return bool(done)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
