"""Kafka topic names: what Kafka accepts, checked before a table is used on Kafka.

Kafka's rules (``org.apache.kafka.common.internals.Topic.validate``): 1 to 249
characters of ``[a-zA-Z0-9._-]``, and not ``.`` or ``..``. A glob source is
checked on its literal characters (``*``, ``?`` and ``[...]`` classes match
topic names; they are not names). The default dead-letter stream of Redis,
``synapse:dlq``, is not a legal topic: on Kafka the default is ``synapse.dlq``.
"""

from __future__ import annotations

import re

MAX_LENGTH = 249
DEFAULT_DLQ = "synapse.dlq"
_LEGAL = re.compile(r"[a-zA-Z0-9._-]+")
_GLOB_META = re.compile(r"\*|\?|\[[^\]]*\]")


def topic_problem(name: str) -> str | None:
    """Why ``name`` cannot be a Kafka topic, or None when it can."""
    if not name:
        return "a topic name cannot be empty"
    if name in (".", ".."):
        return f"{name!r} cannot be a topic name"
    if len(name) > MAX_LENGTH:
        return f"topic name is {len(name)} characters; Kafka allows at most {MAX_LENGTH}"
    bad = sorted(set(_LEGAL.sub("", name)))
    if bad:
        shown = " ".join(repr(c) for c in bad)
        return f"{name!r} has characters Kafka does not allow in a topic name: {shown}"
    return None


def glob_problem(pattern: str) -> str | None:
    """Why no topic can match the glob ``pattern`` (an illegal literal character, or
    longer than any topic name even with its wildcards matching nothing), or None."""
    literal = _GLOB_META.sub("", pattern)
    if not literal:
        return None
    bad = sorted(set(_LEGAL.sub("", literal)))
    if bad:
        shown = " ".join(repr(c) for c in bad)
        return f"glob {pattern!r} can match no Kafka topic: it has {shown}"
    if len(literal) > MAX_LENGTH:
        return f"glob {pattern!r} can match no Kafka topic: longer than {MAX_LENGTH} characters"
    return None
