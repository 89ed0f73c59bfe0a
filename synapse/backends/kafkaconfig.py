"""librdkafka settings for every Kafka client Synapse makes: the bootstrap list, Synapse's
own settings, and the operator's from ``SYNAPSE_KAFKA_CONFIG`` (TLS, SASL, timeouts...).

``SYNAPSE_KAFKA_CONFIG`` names a file of librdkafka properties, as Kafka's own
``client.properties``: ``key=value`` lines, ``#`` or ``!`` comments. What it sets wins over
Synapse's tuning (``linger.ms``, timeouts) but not over what Synapse's guarantees rest on
(``OWNED``: acks, offsets committed by hand, the group): such a key, a line that is not
``key=value``, a property librdkafka does not know or a value it refuses is a ConfigError
naming the file and line (exit 78), checked before any client connects. Values are never
logged (``sasl.password`` lives here).
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, Producer

from synapse.errors import ConfigError, Problem

ENV = "SYNAPSE_KAFKA_CONFIG"
#: What delivery and the consumer group rest on: set by Synapse only.
OWNED = frozenset(
    {
        "bootstrap.servers",
        "metadata.broker.list",
        "group.id",
        "group.instance.id",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "auto.offset.reset",
        "enable.partition.eof",
        "acks",
        "request.required.acks",
        "transactional.id",
        "isolation.level",
    }
)

_lock = threading.Lock()
_cache: dict[tuple[str, int], dict[str, str]] = {}


def client_config(bootstrap: str, ours: dict[str, Any]) -> dict[str, Any]:
    """A client's settings: ``bootstrap`` and ``ours``, with the operator's file on top."""
    return {"bootstrap.servers": bootstrap, **ours, **operator_settings()}


def operator_settings() -> dict[str, str]:
    """The properties in ``$SYNAPSE_KAFKA_CONFIG`` (none when unset), read once per
    version of the file."""
    name = os.environ.get(ENV, "")
    if not name:
        return {}
    path = Path(name)
    try:
        version = path.stat().st_mtime_ns
        with _lock:
            found = _cache.get((name, version))
        if found is not None:
            return found
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError.single(name, None, f"{ENV}: cannot read it: {exc}") from exc
    found = parse(name, text)
    check(name, text, found)
    with _lock:
        _cache[(name, version)] = found
    return found


def parse(file: str, text: str) -> dict[str, str]:
    """``key=value`` lines (blank lines and ``#``/``!`` comments skipped); every problem
    at once, each with its line."""
    found: dict[str, str] = {}
    problems: list[Problem] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            problems.append(Problem(file, number, "expected a librdkafka property: key=value"))
        elif key in OWNED:
            problems.append(
                Problem(file, number, f"{key} is Synapse's own (its delivery rests on it)")
            )
        else:
            found[key] = value
    if problems:
        raise ConfigError(problems)
    return found


def check(file: str, text: str, props: dict[str, str]) -> None:
    """librdkafka's own verdict on every property and value, with no broker contacted
    (a client with no bootstrap list connects nowhere); the line of the property it names."""
    try:
        Producer({**props, "log_level": 0})
    except KafkaException as exc:
        why = exc.args[0].str()
        named = re.search(r'property:? "([^"]+)"', why)
        line = _line_of(text, named.group(1)) if named else None
        raise ConfigError.single(file, line, f"librdkafka refuses it: {why}") from exc


def _line_of(text: str, key: str) -> int | None:
    for number, raw in enumerate(text.splitlines(), 1):
        if raw.partition("=")[0].strip() == key:
            return number
    return None
