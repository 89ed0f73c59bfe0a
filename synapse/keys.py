"""Every Redis key and field name Synapse owns, in one place, under ``synapse:``."""

from __future__ import annotations

DEFAULT_DEAD_LETTER = "synapse:dlq"

#: Service registry: a hash per service instance, with a TTL, and a sorted set
#: (member: the hash's key, score: its expiry in ms) to list them without SCAN.
#: The ``{registry}`` hash tag keeps every registry key in one slot, so the MULTI that
#: writes a hash and its index entry together is allowed on Redis Cluster too.
REGISTRY_PREFIX = "synapse:{registry}:service:"
REGISTRY_INDEX = "synapse:{registry}:services"

#: Consumer-name leases: one key per (group, consumer name) held by the live router using it.
CONSUMER_LEASE_PREFIX = "synapse:consumer:"


def consumer_lease(group: str, consumer: str) -> str:
    """The lease key of ``consumer`` in ``group``: ``synapse:consumer:<group>:<name>``."""
    return f"{CONSUMER_LEASE_PREFIX}{group}:{consumer}"


#: ``synapse dlq redrive`` counts: a hash per dead-letter stream, in its cluster slot, from
#: "<stream>\0<entry id>" of each redriven entry to how many times its event was redriven.
#: The count lives here, never in a field a producer could set; the key expires 30 days
#: after the last redrive.
REDRIVES_PREFIX = "synapse:redrives:"


def redrive_counts(dead_letter: str) -> str:
    """The redrive-count hash of ``dead_letter``: ``synapse:redrives:{<its hashed part>}``."""
    start = dead_letter.find("{")
    end = dead_letter.find("}", start + 1)
    tag = dead_letter[start + 1 : end] if 0 <= start < end - 1 else dead_letter
    return f"{REDRIVES_PREFIX}{{{tag}}}"


#: ``synapse replay`` checkpoint: a hash per (source, destination, filter) holding the
#: last source id copied, written atomically with each batch of copies; the key is
#: ``<prefix>{<destination's hashed part>}:...`` so it shares the destination's cluster slot.
REPLAY_PREFIX = "synapse:replay:"

#: A service's retry stream: redriven handler dead letters, read by that service only.
RETRY_PREFIX = "synapse:retry:"
#: Dedupe marks of a service's handled events; the ``{<service>}`` hash tag keeps one
#: service's marks in one cluster slot (one MGET checks a whole batch).
DEDUPE_PREFIX = "synapse:dedupe:"


def retry_stream(service: str) -> str:
    """The retry stream of ``service``: ``synapse:retry:<service>``."""
    return f"{RETRY_PREFIX}{service}"


def dedupe_mark(service: str, key: str) -> str:
    """The dedupe mark of one event for ``service``: ``synapse:dedupe:{<service>}:<key>``."""
    return f"{DEDUPE_PREFIX}{{{service}}}:{key}"


# Provenance fields added to every destination copy.
F_SOURCE = b"synapse-source"
F_ID = b"synapse-id"
F_ROUTE = b"synapse-route"
PROVENANCE_FIELDS = frozenset({F_SOURCE, F_ID, F_ROUTE})

# Dead-letter fields.
F_REASON = b"synapse-reason"
F_ERROR = b"synapse-error"
F_DELIVERIES = b"synapse-deliveries"
F_CONFIG = b"synapse-config"
F_TIME = b"synapse-time"
F_TRUNCATED = b"synapse-truncated"
F_SHA256_PREFIX = b"synapse-sha256:"
F_REDRIVES = b"synapse-redrives"
#: The one refused destination a dead letter stands for (``dlq redrive`` writes it there).
F_DESTINATION = b"synapse-destination"
F_REPLAY_OF = b"synapse-replay-of"
F_REPLAY_SOURCE = b"synapse-replay-source"
#: On a handler dead letter: the consuming service whose handler gave up.
F_CONSUMER = b"synapse-consumer"
