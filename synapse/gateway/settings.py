"""What ``synapse-gateway`` is told, and where each setting comes from.

Redis is found like the router and the CLI find it: ``--url`` (or
``--redis-url``), else ``SYNAPSE_URL`` / ``SYNAPSE_REDIS_URL``, else the URL
``bin/run`` wrote to ``<state-dir>/redis.url``. The token comes from
``--token-file`` or a systemd credential named ``gateway-token``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from synapse import settings
from synapse.errors import UsageError
from synapse.gateway.access import Cors, StreamPolicy

TOKEN_CREDENTIAL = "gateway-token"


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewaySettings:
    """Everything ``synapse-gateway`` is told (see ``main.py`` for the flags)."""

    url: str
    host: str = "127.0.0.1"
    port: int = 8088
    policy: StreamPolicy = field(default_factory=StreamPolicy)
    token: str | None = field(default=None, repr=False)
    cors: Cors = field(default_factory=Cors)
    max_clients: int = 1000
    client_buffer_bytes: int = 1 << 20
    keepalive_s: float = 15.0
    block_ms: int = 1000


def resolve_url(flag: str | None, state_flag: str | None) -> str:
    """flag > SYNAPSE_URL > SYNAPSE_REDIS_URL > <state-dir>/redis.url; UsageError when none."""
    url = flag or os.environ.get("SYNAPSE_URL") or os.environ.get("SYNAPSE_REDIS_URL")
    if url:
        return url
    state = settings.state_dir(state_flag or os.environ.get("SYNAPSE_STATE_DIR"))
    found = settings.url_from_state(state)
    if found:
        return found
    raise UsageError(
        "no Redis URL: pass --url or set SYNAPSE_URL, or start the router (bin/run) "
        f"so that {state / settings.URL_FILE} exists"
    )


def token_path(flag: Path | None) -> Path | None:
    if flag is not None:
        return flag
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / TOKEN_CREDENTIAL).exists():
        return Path(creds) / TOKEN_CREDENTIAL
    return None


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8088")
    return host.strip("[]") or "127.0.0.1", int(port)
