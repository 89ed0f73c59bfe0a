"""Process settings outside routes.yaml: where Redis is, where state lives, secrets.

Precedence is flag > environment (``SYNAPSE_*``) > default; click applies the
first two. Secrets (the Redis password) come from the URL, ``SYNAPSE_REDIS_PASSWORD``
or a systemd credential (``$CREDENTIALS_DIRECTORY/redis-password``), never from
routes.yaml, and are never logged.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from synapse.files import read_small_text

DEFAULT_STATE_DIR = Path(".synapse")
URL_FILE = "redis.url"


def state_dir(flag: str | None) -> Path:
    if flag:
        return Path(flag)
    systemd = os.environ.get("STATE_DIRECTORY")
    if systemd:
        return Path(systemd.split(":")[0])
    return DEFAULT_STATE_DIR


def password() -> str | None:
    found = os.environ.get("SYNAPSE_REDIS_PASSWORD")
    if found:
        return found
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds:
        path = Path(creds) / "redis-password"
        if path.exists():
            return read_small_text(path) or None
    return None


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def url_from_state(state: Path) -> str | None:
    """The embedded server's URL as the router wrote it, if any."""
    path = state / URL_FILE
    if path.exists():
        text = read_small_text(path)
        return text or None
    return None
