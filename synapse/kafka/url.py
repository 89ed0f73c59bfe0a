"""``kafka://host:port[,host:port]``: which backend a URL names, and Kafka's bootstrap list.

One backend per router process, chosen by the URL's scheme: ``redis://``,
``rediss://``, ``unix://``, ``redis+cluster://`` are Redis; ``kafka://`` is
Kafka. A Kafka URL names bootstrap brokers only: no path, query, user or
password (security settings will come from the environment, not the URL).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from synapse.errors import UsageError
from synapse.settings import host_port, url_host

SCHEME = "kafka://"
DEFAULT_PORT = 9092

Kind = Literal["redis", "kafka"]

#: Why a ``kafka://`` URL is refused (exit 2) by code that speaks Redis only
#: (``cli/connection.redis_url``). The router, ``synapse.client.Bus`` and every ``synapse``
#: command that connects take it now.
KAFKA_NOT_YET = (
    "kafka:// URLs are not supported here (docs/kafka.md): this code path speaks Redis only"
)


def backend_kind(url: str) -> Kind:
    """``"kafka"`` for a ``kafka://`` URL (any case), else ``"redis"``."""
    return "kafka" if url[: len(SCHEME)].lower() == SCHEME else "redis"


@dataclass(frozen=True, slots=True, kw_only=True)
class KafkaUrl:
    """The bootstrap brokers of a ``kafka://`` URL, in the order given."""

    brokers: tuple[tuple[str, int], ...]

    @property
    def bootstrap(self) -> str:
        """``host:port,host:port`` as a client's ``bootstrap.servers`` takes it."""
        return ",".join(f"{url_host(h)}:{p}" for h, p in self.brokers)

    def __str__(self) -> str:
        return SCHEME + self.bootstrap


def parse(url: str) -> KafkaUrl:
    """Parse ``kafka://host[:port][,host[:port]...]`` (port 9092 if none); raise
    ``UsageError`` saying what is wrong."""
    if backend_kind(url) != "kafka":
        raise UsageError(f"{url!r} is not a kafka:// URL")
    rest = url[len(SCHEME) :].rstrip("/")
    if not rest:
        raise UsageError(f"{url!r} names no broker: kafka://host:port[,host:port]")
    if any(c in rest for c in "/?#@"):
        raise UsageError(
            f"{url!r}: a Kafka URL is kafka://host:port[,host:port] "
            "(no path, query, user or password)"
        )
    brokers: list[tuple[str, int]] = []
    for part in rest.split(","):
        part = part.strip()
        if not part:
            raise UsageError(f"{url!r} has an empty broker in its list")
        address = part if _has_port(part) else f"{part}:{DEFAULT_PORT}"
        try:
            host, port = host_port(address)
        except ValueError as exc:
            raise UsageError(f"{url!r}: {exc}") from None
        if port == 0 or address.startswith(":"):
            raise UsageError(f"{url!r}: {part!r} needs a host and a port from 1 to 65535")
        brokers.append((host, port))
    return KafkaUrl(brokers=tuple(brokers))


def _has_port(part: str) -> bool:
    """Whether ``part`` ends in ``:port`` (an IPv6 literal counts only after its bracket)."""
    if part.startswith("["):
        return "]:" in part
    return ":" in part
