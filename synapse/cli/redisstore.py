"""The store seam on Redis streams: what ``streams``, ``tail`` and ``publish`` did before it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from synapse.cli.connection import Client
from synapse.cli.errors import Failure
from synapse.cli.output import text
from synapse.cli.redisread import call
from synapse.cli.store import Cursor, Record
from synapse.cli.times import id_key, id_time
from synapse.kafka.url import Kind


class RedisStore:
    """Redis streams through one sync client (one server or a cluster)."""

    kind: Kind = "redis"
    noun = "stream"

    def __init__(self, client: Client) -> None:
        self.client = client

    def names(self, match: str) -> list[str]:
        found = self.client.scan_iter(match=match, count=1000, _type="stream")
        return sorted({text(k) for k in found})

    def exists(self, name: str) -> bool:
        return bool(self.client.type(name) == b"stream")

    def info(self, name: str) -> dict[str, Any]:
        """Length, first/last entry, groups; raises Failure when there is no such stream."""
        if not self.exists(name):
            raise Failure(f"no stream {name!r}")
        info = self.client.xinfo_stream(name)
        first = info.get("first-entry")
        last = info.get("last-entry")
        first_id = text(first[0]) if first else None
        last_id = text(last[0]) if last else None
        return {
            "name": name,
            "length": int(info["length"]),
            "first_id": first_id,
            "first_time": id_time(first_id),
            "last_id": last_id,
            "last_time": id_time(last_id),
            "last_generated_id": text(info.get("last-generated-id")),
            "oldest_age_s": age_s(None if first_id is None else id_key(first_id)[0]),
            "groups": self.groups(name),
        }

    def groups(self, name: str) -> list[dict[str, Any]]:
        """XINFO GROUPS with each group's consumers, as plain JSON-able dicts."""
        out = []
        for g in self.client.xinfo_groups(name):
            group = text(g["name"])
            consumers = [
                {"name": text(c["name"]), "pending": int(c["pending"]), "idle_ms": int(c["idle"])}
                for c in self.client.xinfo_consumers(name, group)
            ]
            lag = g.get("lag")
            out.append(
                {
                    "name": group,
                    "consumers": consumers,
                    "pending": int(g["pending"]),
                    "lag": None if lag is None else int(lag),
                    "last_delivered_id": text(g.get("last-delivered-id")),
                    "entries_read": g.get("entries-read"),
                }
            )
        return out

    def last(
        self, name: str, count: int, keep: Callable[[Record], bool] | None
    ) -> tuple[list[Record], Cursor]:
        """The last ``count`` kept entries, looking back over at most a window of entries
        (``count``, or 20x it and at least 1000 when filtering)."""
        if count <= 0:
            return [], "$"
        window = count if keep is None else max(1000, count * 20)
        reply = call(self.client, "XREVRANGE", name, "+", "-", "COUNT", window)
        records = [_record(e[0], e[1]) for e in reversed(reply)]
        shown = [r for r in records if keep is None or keep(r)][-count:]
        return shown, (records[-1].id if records else "$")

    def follow(self, name: str, cursor: Cursor) -> Iterator[list[Record]]:
        last = str(cursor)
        while True:
            reply = call(self.client, "XREAD", "COUNT", 100, "BLOCK", 1000, "STREAMS", name, last)
            batch = [_record(eid, flat) for _, found in reply or [] for eid, flat in found]
            if batch:
                last = batch[-1].id
            yield batch

    def append(self, name: str, fields: list[bytes], key: bytes | None = None) -> str:
        entry = dict(zip(fields[::2], fields[1::2], strict=True))
        return text(self.client.xadd(name, entry))  # type: ignore[arg-type]

    def close(self) -> None:
        """Nothing: the client is closed with the click context (connection.connect)."""


def _record(entry_id: bytes, flat: list[bytes] | None) -> Record:
    return Record(id=text(entry_id), ms=id_key(entry_id)[0], fields=list(flat or []))


def age_s(first_ms: int | None) -> float | None:
    """Seconds since ``first_ms`` (None for no entry)."""
    if first_ms is None:
        return None
    return max(0.0, round(time.time() - first_ms / 1000, 3))
