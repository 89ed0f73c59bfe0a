"""Kafka topic names: what Kafka accepts, checked before a table is used on Kafka.

Kafka's rules (``org.apache.kafka.common.internals.Topic.validate``): 1 to 249
characters of ``[a-zA-Z0-9._-]``, and not ``.`` or ``..``. A glob source is
checked on its literal characters (``*``, ``?`` and ``[...]`` classes match
topic names; they are not names). The default dead-letter stream of Redis,
``synapse:dlq``, is not a legal topic: on Kafka the default is ``synapse.dlq``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from synapse.errors import Problem
from synapse.loops import Target
from synapse.matching import is_glob
from synapse.yamlfile import LineMap, line_of

MAX_LENGTH = 249
DEFAULT_DLQ = "synapse.dlq"
#: The Kafka names of what ``synapse/keys.py`` names on Redis (``:`` is not legal in a topic).
#: A service's retry topic (``synapse dlq redrive`` of a handler dead letter writes here).
RETRY_PREFIX = "synapse.retry."
#: Service registry: one compacted topic, a record per service instance keyed by it.
REGISTRY_TOPIC = "synapse.registry"
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


def retry_topic(service: str) -> str:
    """The retry topic of ``service``: ``synapse.retry.<service>`` (a ValueError names
    the problem when the service name makes it an illegal topic)."""
    topic = RETRY_PREFIX + service
    why = topic_problem(topic)
    if why:
        raise ValueError(f"service {service!r} has no legal retry topic: {why}")
    return topic


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


def table_problems(
    file: str, lines: LineMap, sources: Sequence[str], targets: Iterable[Target]
) -> list[Problem]:
    """Every source (name or glob) and every topic the router writes (routes' ``to``,
    ``router.unrouted``, ``router.dead_letter``) that Kafka cannot have, with file:line."""
    found: list[Problem] = []
    for i, source in enumerate(sources):
        why = glob_problem(source) if is_glob(source) else topic_problem(source)
        if why:
            found.append(Problem(file, line_of(lines, ("sources", i)), f"source: {why}"))
    for target in targets:
        why = topic_problem(target.stream)
        if why:
            found.append(Problem(file, line_of(lines, target.at), f"{target.what}: {why}"))
    return found
