"""Linear-time regular expressions: every user-supplied regex Synapse runs.

Schema ``pattern`` / ``patternProperties`` and ``where: {regex: ...}`` take
patterns from the table's author and subjects from any producer, so they run on
an engine whose matching time is linear in the subject whatever the pattern:
the Rust ``regex`` crate, which jsonschema-rs already ships (``RegexOptions``).
Python's ``re`` backtracks: ``^(a+)+$`` against 30 ``a`` and a ``!`` takes
minutes, on the event loop. One engine for both validators also means the fast
verdict and the readable error can never disagree about a pattern.

The price: no look-around and no back-references. Such a pattern is refused
when the table loads (file and line), never at routing time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

import jsonschema
import jsonschema_rs

from synapse.errors import SynapseError

Search = Callable[[str], bool]

#: Rust ``regex``: matching in time linear in the subject, no backtracking.
LINEAR = jsonschema_rs.RegexOptions()


class RegexError(SynapseError, ValueError):
    """A pattern the linear-time engine cannot run (bad syntax, look-around, back-reference)."""


@lru_cache(maxsize=4096)
def compile_search(pattern: str) -> Search:
    """A predicate: does ``pattern`` match somewhere in a string (``re.search`` semantics)."""
    try:
        checker = jsonschema_rs.validator_for(
            {"type": "string", "pattern": pattern}, pattern_options=LINEAR
        )
    except jsonschema_rs.ValidationError as exc:
        raise RegexError(
            f"{pattern!r} is not a regex the linear-time engine accepts "
            "(look-around and back-references are not supported)"
        ) from exc
    is_valid: Search = checker.is_valid
    return is_valid


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if validator.is_type(instance, "string") and not compile_search(pattern)(instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        test = compile_search(pattern)
        for key, value in instance.items():
            if test(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, extra: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    tests = [compile_search(p) for p in schema.get("patternProperties", {})]
    extras = {k for k in instance if k not in properties and not any(test(k) for test in tests)}
    if validator.is_type(extra, "object"):
        for key in extras:
            yield from validator.descend(instance[key], extra, path=key)
    elif not extra and extras:
        joined = ", ".join(repr(each) for each in sorted(extras, key=str))
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            patterns = ", ".join(repr(each) for each in sorted(schema["patternProperties"]))
            yield jsonschema.ValidationError(
                f"{joined} {verb} not match any of the regexes: {patterns}"
            )
        else:
            verb = "was" if len(extras) == 1 else "were"
            yield jsonschema.ValidationError(
                f"Additional properties are not allowed ({joined} {verb} unexpected)"
            )


def linear_validator(cls: Any) -> Any:
    """``cls`` (a python-jsonschema validator class) with its regex keywords made linear-time."""
    return jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        cls,
        validators={
            "pattern": _pattern,
            "patternProperties": _pattern_properties,
            "additionalProperties": _additional_properties,
        },
    )


def needs_backtracking_engine(schema: Any) -> bool:
    """Whether python-jsonschema would still run ``re`` on data for ``schema``.

    ``unevaluatedProperties`` beside ``patternProperties`` does (inside jsonschema's
    own helpers): such a schema's readable errors come from jsonschema-rs instead.
    """
    found = {"unevaluatedProperties": False, "patternProperties": False}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in found:
                    found[key] = True
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(schema)
    return all(found.values())
