"""Process settings outside routes.yaml: where Redis is, where state lives, secrets.

Precedence is flag > environment (``SYNAPSE_*``) > default; click applies the
first two. Secrets (the Redis password) come from the URL, ``SYNAPSE_REDIS_PASSWORD``, a
file named by ``SYNAPSE_REDIS_PASSWORD_FILE`` or a systemd credential
(``$CREDENTIALS_DIRECTORY/redis-password``), never from routes.yaml, and are never
logged. A password inside ``--redis-url`` on the command line is visible to every
user in ``ps``: it works, with a warning naming the safer places.
"""

from __future__ import annotations

import ipaddress
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


#: Said wherever a password is seen on a command line.
PASSWORD_HINT = (
    "a password in --url (or --redis-url) is visible to every user in ps: set SYNAPSE_URL, "
    "or SYNAPSE_REDIS_PASSWORD / SYNAPSE_REDIS_PASSWORD_FILE, or (under systemd) the "
    "redis-password credential (LoadCredential=)"
)


def has_password(url: str) -> bool:
    """Whether ``url`` carries a password (``redis://user:pw@host``)."""
    try:
        return urlsplit(url).password is not None
    except ValueError:
        return False


def password() -> str | None:
    """The Redis password: $SYNAPSE_REDIS_PASSWORD, the file it names, or the credential."""
    found = os.environ.get("SYNAPSE_REDIS_PASSWORD")
    if found:
        return found
    file = os.environ.get("SYNAPSE_REDIS_PASSWORD_FILE")
    if file:
        return read_small_text(Path(file)) or None
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds:
        path = Path(creds) / "redis-password"
        if path.exists():
            return read_small_text(path) or None
    return None


def host_port(value: str) -> tuple[str, int]:
    """Split HOST:PORT (``[::1]:9464`` for IPv6 literals; no host means 127.0.0.1).

    Raises ValueError saying what is wrong: no port, a port out of range, or an
    IPv6 literal without its brackets (``::1:9464`` is ambiguous).
    """
    host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:9464 or [::1]:9464)")
    if host.startswith("[") and host.endswith("]"):
        literal = host[1:-1]
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise ValueError(f"{value!r}: {literal!r} is not an IPv6 address") from None
        return literal, int(port)
    if ":" in host:
        raise ValueError(f"{value!r}: put an IPv6 address in brackets, e.g. [::1]:{port}")
    return host or "127.0.0.1", int(port)


def url_host(host: str) -> str:
    """``host`` as it goes in a URL: IPv6 literals in brackets."""
    return f"[{host}]" if ":" in host else host


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
