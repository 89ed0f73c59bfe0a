"""kafka:// URLs: which backend a URL names, and the bootstrap list (synapse/kafka/url.py)."""

from __future__ import annotations

import pytest

from synapse.errors import UsageError
from synapse.kafka.url import backend_kind, parse


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("kafka://h:9092", "kafka"),
        ("KAFKA://h:9092", "kafka"),
        ("redis://h:6379/0", "redis"),
        ("rediss://h:6379", "redis"),
        ("redis+cluster://h:7000", "redis"),
        ("unix:///tmp/r.sock", "redis"),
    ],
)
def test_the_scheme_picks_the_backend(url: str, kind: str) -> None:
    """kafka:// (any case) is Kafka; every Redis scheme stays Redis."""
    assert backend_kind(url) == kind


def test_brokers_in_order_with_default_port_and_ipv6() -> None:
    """Several brokers keep their order; no port means 9092; IPv6 literals in brackets."""
    url = parse("kafka://a.example:9093,b.example,[::1]:9094/")
    assert url.brokers == (("a.example", 9093), ("b.example", 9092), ("::1", 9094))
    assert url.bootstrap == "a.example:9093,b.example:9092,[::1]:9094"
    assert str(url) == "kafka://a.example:9093,b.example:9092,[::1]:9094"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("kafka://", "names no broker"),
        ("kafka://a:9092,,b:9092", "empty broker"),
        ("kafka://a:99999", "not HOST:PORT"),
        ("kafka://a:0", "port from 1"),
        ("kafka://:9092", "needs a host"),
        ("kafka://user:pw@a:9092", "no path, query, user or password"),
        ("kafka://a:9092/topic", "no path"),
        ("kafka://::1:9092", "brackets"),
        ("redis://a:6379", "not a kafka:// URL"),
    ],
)
def test_a_bad_url_is_a_usage_error_saying_what_is_wrong(url: str, says: str) -> None:
    """Each malformed Kafka URL is refused with a message naming the problem."""
    with pytest.raises(UsageError, match=says):
        parse(url)
