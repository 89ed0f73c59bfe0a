"""Who may read what: the stream allowlist, the token, and CORS.

- Streams: only those matching ``--streams`` globs are served; with none given,
  every stream. Internal streams (``synapse:*`` on Redis: dead letters, retry
  streams, the registry; ``synapse.*`` and Kafka's own ``__*`` topics on Kafka)
  are served only when listed by their exact name, never through a glob.
- Token: with ``--token-file``, a request needs ``Authorization: Bearer <token>``
  or ``?token=<token>`` (EventSource cannot set headers). Compared in constant
  time; never logged.
- CORS: response headers only for an ``Origin`` listed in ``--allow-origin``
  (``*`` allows any).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path

from synapse.errors import UsageError

INTERNAL_PREFIX = "synapse:"

#: Headers a cross-origin EventSource (or fetch-based polyfill) may send.
CORS_ALLOW_HEADERS = "Authorization, Last-Event-ID, Cache-Control"


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    """The allowlist: ``globs`` None means every non-internal stream. ``internal``: the
    prefixes of the backend's internal names (the gateway sets its reader's)."""

    globs: tuple[str, ...] | None = None
    internal: tuple[str, ...] = (INTERNAL_PREFIX,)

    @classmethod
    def parse(cls, text: str | None) -> StreamPolicy:
        """From ``--streams a,b:*`` (None or empty: the default policy)."""
        if not text or not text.strip():
            return cls(None)
        globs = tuple(g.strip() for g in text.split(",") if g.strip())
        return cls(globs or None)

    def with_internal(self, prefixes: tuple[str, ...]) -> StreamPolicy:
        return replace(self, internal=prefixes)

    def allows(self, stream: str) -> bool:
        if stream.startswith(self.internal):
            return self.globs is not None and stream in self.globs
        if self.globs is None:
            return True
        return any(fnmatchcase(stream, g) for g in self.globs)

    def describe(self) -> str:
        if self.globs:
            return ",".join(self.globs)
        return "* (internal " + ", ".join(p + "*" for p in self.internal) + " excluded)"


def read_token(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace removed); UsageError when unusable."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read --token-file {path}: {exc}") from None
    if not token:
        raise UsageError(f"--token-file {path} is empty")
    if any(ch.isspace() for ch in token):
        raise UsageError(f"--token-file {path}: the token must be one word")
    return token


def token_ok(expected: str | None, authorization: str | None, query_token: str | None) -> bool:
    """True when no token is required, or the header or query carries it."""
    if expected is None:
        return True
    want = expected.encode()
    if authorization:
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), want):
            return True
    return query_token is not None and hmac.compare_digest(query_token.encode(), want)


@dataclass(frozen=True, slots=True)
class Cors:
    """The origins allowed to read cross-origin (empty: none, the default)."""

    origins: frozenset[str] = frozenset()

    @classmethod
    def of(cls, origins: Iterable[str]) -> Cors:
        return cls(frozenset(o.strip().rstrip("/") for o in origins if o.strip()))

    def headers(self, origin: str | None, preflight: bool = False) -> dict[str, str]:
        """The CORS headers for a request from ``origin`` (none when not allowed)."""
        if not origin or not self.origins:
            return {}
        if "*" in self.origins:
            allowed = "*"
        elif origin in self.origins:
            allowed = origin
        else:
            return {}
        out = {"Access-Control-Allow-Origin": allowed, "Vary": "Origin"}
        if preflight:
            out["Access-Control-Allow-Methods"] = "GET, OPTIONS"
            out["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
            out["Access-Control-Max-Age"] = "600"
        return out
