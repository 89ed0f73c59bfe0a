"""What ``synapse replay`` copies, on every store: the ``--type``/``--where`` filter and the
layout of a copy (provenance replaced by ``synapse-replay-of`` / ``synapse-replay-source``)."""

from __future__ import annotations

from typing import Any

import yaml

from synapse import keys
from synapse.errors import InvalidEvent, UsageError
from synapse.events import Limits, parse, strip_ours
from synapse.matching import Filter, WhereError, compile_where


def compile_filter(where: str | None) -> Filter | None:
    """``--where`` as a YAML/JSON mapping in the routes.yaml ``where`` syntax."""
    if not where:
        return None
    try:
        spec = yaml.safe_load(where)
    except yaml.YAMLError as exc:
        raise UsageError(f"--where is not YAML/JSON: {exc}") from None
    if not isinstance(spec, dict) or not spec:
        raise UsageError("--where takes a mapping, e.g. '{stage: production}'")
    try:
        return compile_where(spec)
    except WhereError as exc:
        raise UsageError(f"--where: {exc}") from None


def matches(fields: list[bytes], limits: Limits, wanted_type: Any, filt: Filter | None) -> bool:
    """Whether an entry passes --type and --where (an unparsable one never does)."""
    if wanted_type is None and filt is None:
        return True
    try:
        event_type, body = parse(fields, limits)
    except InvalidEvent:
        return False
    if wanted_type is not None and not wanted_type(event_type):
        return False
    return filt is None or filt.holds(body)


def copy_of(fields: list[bytes], source: str, entry_id: bytes, trusted: bool) -> list[bytes]:
    """The replayed copy: the entry's fields, its ``synapse-*`` ones replaced.

    Only the router's own provenance survives, and only from a stream the router
    writes (``trusted``: not one the table consumes, where every ``synapse-*`` field
    is a producer's); the replay adds ``synapse-replay-of`` and
    ``synapse-replay-source``.
    """
    kept = strip_ours(fields, keys.PROVENANCE_FIELDS if trusted else frozenset())
    return [*kept, keys.F_REPLAY_OF, entry_id, keys.F_REPLAY_SOURCE, source.encode()]
