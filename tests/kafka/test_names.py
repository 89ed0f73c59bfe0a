"""Kafka topic-name rules (synapse/kafka/names.py)."""

from __future__ import annotations

import pytest

from synapse.kafka.names import DEFAULT_DLQ, glob_problem, topic_problem


@pytest.mark.parametrize("name", ["orders", "a.b-c_D9", "x" * 249, "synapse.dlq", "..."])
def test_legal_topic_names_pass(name: str) -> None:
    """Names of [a-zA-Z0-9._-], 1 to 249 characters, other than . and .., are legal."""
    assert topic_problem(name) is None


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("", "empty"),
        (".", "cannot be a topic name"),
        ("..", "cannot be a topic name"),
        ("x" * 250, "at most 249"),
        ("synapse:dlq", "':'"),
        ("a b/c", "' ' '/'"),
        ("é", "'é'"),
    ],
)
def test_illegal_topic_names_say_why(name: str, says: str) -> None:
    """Each illegal name is refused with the rule it breaks (the bad characters named)."""
    problem = topic_problem(name)
    assert problem is not None and says in problem


def test_the_default_dead_letter_topic_is_legal_and_redis_default_is_not() -> None:
    """synapse.dlq is a legal topic; Redis's synapse:dlq is not (hence a default of its own)."""
    assert topic_problem(DEFAULT_DLQ) is None
    assert topic_problem("synapse:dlq") is not None


@pytest.mark.parametrize("pattern", ["orders.*", "*", "events-?", "model.[ab]*", "x" * 249 + "*"])
def test_globs_that_can_match_topics_pass(pattern: str) -> None:
    """A glob whose literal characters are legal can match a topic."""
    assert glob_problem(pattern) is None


@pytest.mark.parametrize(
    ("pattern", "says"), [("orders:*", "':'"), ("a b*", "' '"), ("x" * 250 + "*", "longer")]
)
def test_globs_that_can_match_no_topic_say_why(pattern: str, says: str) -> None:
    """A glob with an illegal literal character, or too long, can match no topic."""
    problem = glob_problem(pattern)
    assert problem is not None and says in problem
