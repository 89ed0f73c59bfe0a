"""A small Server-Sent Events reader for the tests (aiohttp client, real sockets)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class Message:
    id: str | None
    event: str | None
    data: dict[str, Any]


@dataclass
class SSEClient:
    """One open ``/events`` response, read message by message."""

    session: aiohttp.ClientSession
    response: aiohttp.ClientResponse
    comments: list[str] = field(default_factory=list)
    last_id: str | None = None

    async def next(self, timeout_s: float = 10.0) -> Message | None:
        """The next message, or None when the server ended the stream."""
        return await asyncio.wait_for(self._next(), timeout_s)

    async def _next(self) -> Message | None:
        fields: dict[str, str] = {}
        while True:
            raw = await self.response.content.readline()
            if not raw:
                return None
            line = raw.decode().rstrip("\n")
            if not line:
                if "data" in fields:
                    if "id" in fields:
                        self.last_id = fields["id"]
                    return Message(
                        fields.get("id"), fields.get("event"), json.loads(fields["data"])
                    )
                fields = {}
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value

    async def take(self, count: int, timeout_s: float = 10.0) -> list[Message]:
        out: list[Message] = []
        while len(out) < count:
            msg = await self.next(timeout_s)
            if msg is None:
                raise AssertionError(f"stream ended after {len(out)} of {count} messages")
            out.append(msg)
        return out

    async def close(self) -> None:
        self.response.close()
        await self.session.close()


async def open_events(
    base: str, query: str, headers: dict[str, str] | None = None, expect: int = 200
) -> SSEClient:
    """GET ``/events?<query>``; asserts the status, returns the reader."""
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
    response = await session.get(f"{base}/events?{query}", headers=headers or {})
    if response.status != expect:
        body = await response.text()
        await session.close()
        raise AssertionError(f"status {response.status} (wanted {expect}): {body}")
    return SSEClient(session, response)


async def status_of(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
    """(status, body, headers) of one GET."""
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers or {}) as r:
        return r.status, await r.text(), r.headers
