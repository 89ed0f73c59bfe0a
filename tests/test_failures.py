"""One classify(exc): every failure named by what a real server sends, never by guesswork."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import redis

from synapse.cli.common import Failure as CommandFailed
from synapse.errors import (
    EXIT_CONFIG,
    EXIT_TEMPFAIL,
    EXIT_USAGE,
    ConfigError,
    ConsumerInUse,
    Failure,
    InvalidEvent,
    Outage,
    Reason,
    SynapseError,
    UsageError,
    classify_reply,
    json_reason,
)
from synapse.failures import classify
from synapse.files import TooLarge
from synapse.matching import WhereError
from synapse.regexes import RegexError
from synapse.statelock import AlreadyRunning


def _raised(call: Callable[[], object]) -> BaseException:
    with pytest.raises(Exception) as caught:
        call()
    return caught.value


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_errors_are_named_by_their_code(r: redis.Redis) -> None:
    """NOGROUP, BUSYGROUP, a missing key, NOSCRIPT and WRONGTYPE from a real server."""
    r.xadd("s", {"a": "1"})
    r.set("str", "x")
    r.xgroup_create("s", "g", id="0")
    seen = {
        Failure.NO_GROUP: _raised(lambda: r.xreadgroup("nope", "c", {"s": ">"})),
        Failure.GROUP_EXISTS: _raised(lambda: r.xgroup_create("s", "g", id="0")),
        Failure.NO_KEY: _raised(lambda: r.xgroup_create("missing", "g", id="0")),
        Failure.NO_SCRIPT: _raised(lambda: r.evalsha("0" * 40, 0)),
        Failure.RESPONSE: _raised(lambda: r.xadd("str", {"a": "1"})),
    }
    assert {kind: classify(exc) for kind, exc in seen.items()} == {k: k for k in seen}


def test_a_full_server_is_an_outage(r: redis.Redis) -> None:
    """OOM (redis-py strips the code from the message) is an outage, not the entry's fault."""
    r.config_set("maxmemory", "1")
    try:
        exc = _raised(lambda: r.set("k", "v" * 1000))
    finally:
        r.config_set("maxmemory", "0")
    assert classify(exc) == Failure.OUTAGE


def test_an_unreachable_server_is_a_connection_failure() -> None:
    """A refused connection is CONNECTION; our own Outage is OUTAGE; anything else INTERNAL."""
    client = redis.Redis(port=_closed_port(), socket_connect_timeout=1)
    assert classify(_raised(client.ping)) == Failure.CONNECTION
    assert classify(Outage("OOM")) == Failure.OUTAGE
    assert classify(KeyError("x")) == Failure.INTERNAL
    assert classify(TooLarge(Path("f"), 2, 1)) == Failure.INTERNAL  # an OSError, not the network


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("OOM command not allowed", Failure.OUTAGE),
        ("-READONLY You can't write", Failure.OUTAGE),
        ("CLUSTERDOWN The cluster is down", Failure.OUTAGE),
        ("BUSYGROUP Consumer Group name already exists", Failure.GROUP_EXISTS),
        ("BUSY Redis is busy", Failure.OUTAGE),
        ("NOGROUP No such key 's' or consumer group 'g'", Failure.NO_GROUP),
        ("NOPERM this user has no permissions", Failure.NO_PERMISSION),
        ("NOSCRIPT No matching script", Failure.NO_SCRIPT),
        ("ERR The XGROUP subcommand requires the key to exist.", Failure.NO_KEY),
        ("WRONGTYPE Operation against a key", Failure.RESPONSE),
        ("an error mentioning OOM later", Failure.RESPONSE),
    ],
)
def test_classify_reply_reads_the_first_word(text: str, kind: Failure) -> None:
    """An error reply is named by its code, never by a word further in."""
    assert classify_reply(text) == kind


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", Reason.INVALID_JSON),
        (b'{"a": "\xff"}', Reason.INVALID_ENCODING),
        (b"[" * 2000 + b"]" * 2000, Reason.TOO_DEEP),
    ],
)
def test_json_reason_names_what_orjson_refused(raw: bytes, reason: Reason) -> None:
    """orjson's refusals map to the dead-letter reason the guarantees promise."""
    with pytest.raises(orjson.JSONDecodeError) as caught:
        orjson.loads(raw)
    assert json_reason(caught.value) == reason


def test_an_unknown_reason_is_refused_even_under_python_O() -> None:
    """The reason check is a real check (not an assert that -O strips)."""
    with pytest.raises(ValueError, match="unknown dead-letter reason"):
        InvalidEvent("bad_reason", "x")
    assert InvalidEvent("no_route", "x").reason is Reason.NO_ROUTE


def test_exit_codes_live_on_the_classes() -> None:
    """Each error says how a process ends: config 78, taken 75, usage 2, otherwise 1."""
    assert ConfigError.single("f", None, "x").exit_code == EXIT_CONFIG == 78
    assert ConsumerInUse.exit_code == AlreadyRunning.exit_code == EXIT_TEMPFAIL == 75
    assert UsageError.exit_code == EXIT_USAGE == 2
    assert CommandFailed.exit_code == InvalidEvent.exit_code == Outage.exit_code == 1


def test_every_deliberate_error_is_in_the_tree() -> None:
    """The errors Synapse raises on purpose share the root (and keep their old base)."""
    for cls, base in [
        (RegexError, ValueError),
        (WhereError, ValueError),
        (TooLarge, OSError),
        (AlreadyRunning, Exception),
    ]:
        assert issubclass(cls, SynapseError) and issubclass(cls, base), cls
