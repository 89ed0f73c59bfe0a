"""``classify(exc)``: what kind of failure an exception is, for every caller.

The router's loop, the commit (NOSCRIPT), group creation (BUSYGROUP, a stream
deleted since the scan) and the retry policy ask this one function; nobody
else looks at an error's message. Error replies are named by their code
(``errors.classify_reply``, pure); this module adds what only redis-py's
exception classes say: a lost connection, a timeout, a cluster with no node
reachable.
"""

from __future__ import annotations

from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    NoPermissionError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

from synapse.errors import Failure, Outage, SynapseError, classify_reply

#: Everything the server or the network can raise (``RedisClusterException``, raised
#: when no cluster node is reachable, is not a ``RedisError``): what a heartbeat survives.
REDIS_FAILURES: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)
#: The exceptions ``classify`` calls ``CONNECTION`` (for an ``except`` clause).
CONNECTION_FAILURES: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    RedisClusterException,
    OSError,
)


def error_text(exc: BaseException) -> str:
    """A Redis error as the server sent it: redis-py strips the code (``OOM``, ``READONLY``)
    from the message and keeps it in ``status_code``."""
    code = getattr(exc, "status_code", None)
    text = str(exc)
    return f"{code} {text}" if code and not text.startswith(str(code)) else text


def classify(exc: BaseException) -> Failure:
    """The kind of ``exc``: ``INTERNAL`` for anything that is not the server's or the network's."""
    if isinstance(exc, Outage):
        return Failure.OUTAGE
    if isinstance(exc, SynapseError):  # raised on purpose (TooLarge is an OSError too)
        return Failure.INTERNAL
    if isinstance(exc, CONNECTION_FAILURES):
        return Failure.CONNECTION
    if isinstance(exc, NoScriptError):
        return Failure.NO_SCRIPT
    if isinstance(exc, NoPermissionError):
        return Failure.NO_PERMISSION
    if isinstance(exc, ResponseError):
        return classify_reply(error_text(exc))
    return Failure.INTERNAL
