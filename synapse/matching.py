"""Globs and ``where`` filters, compiled once when the table loads.

Globs are shell-style (``*``, ``?``, ``[...]``), case-sensitive, and ``*`` crosses
dots. A ``where`` block maps dotted body paths to conditions; all must hold. A
condition is a literal (equality) or a mapping of operators: ``eq``, ``ne``,
``in``, ``not_in``, ``exists``, ``gt``, ``gte``, ``lt``, ``lte``, ``glob``,
``regex``. ``any: [where, ...]`` holds when one of its blocks holds; ``not:
where`` when its block does not.

Equality is strict about JSON types: ``true`` never equals ``1``. Ordering
compares numbers with numbers and strings with strings; anything else is false.
A missing path fails every operator except ``ne``, ``not_in`` and ``exists: false``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from synapse.errors import SynapseError
from synapse.regexes import RegexError, compile_search

GlobTest = Callable[[str], bool]

_MISSING: Any = object()
_GLOB_CHARS = frozenset("*?[")


def compile_glob(pattern: str) -> GlobTest:
    """A predicate for one shell-style glob; a plain name compiles to equality."""
    if not _GLOB_CHARS.intersection(pattern):
        return pattern.__eq__
    return _regex_match(re.compile(fnmatch.translate(pattern)))


def _regex_match(rx: re.Pattern[str]) -> GlobTest:
    def test(value: str) -> bool:
        return rx.match(value) is not None

    return test


def is_glob(pattern: str) -> bool:
    return bool(_GLOB_CHARS.intersection(pattern))


def lookup(body: Any, path: tuple[str, ...]) -> Any:
    """The value at a dotted path (list items by index), or the _MISSING marker."""
    current = body
    for part in path:
        if isinstance(current, dict):
            current = current.get(part, _MISSING)
            if current is _MISSING:
                return _MISSING
        elif (
            isinstance(current, list)
            and part.isascii()  # "²".isdigit() is true but int("²") fails
            and part.isdigit()
            and int(part) < len(current)
        ):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: booleans are not numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def _ordered(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def test(value: Any, operand: Any) -> bool:
        if isinstance(value, bool) or isinstance(operand, bool):
            return False
        if isinstance(value, int | float) and isinstance(operand, int | float):
            return op(value, operand)
        if isinstance(value, str) and isinstance(operand, str):
            return op(value, operand)
        return False

    return test


def _in(value: Any, operand: Any) -> bool:
    return value is not _MISSING and any(json_equal(value, item) for item in operand)


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda v, o: v is not _MISSING and json_equal(v, o),
    "ne": lambda v, o: v is _MISSING or not json_equal(v, o),
    "in": _in,
    "not_in": lambda v, o: not _in(v, o),
    "exists": lambda v, o: (v is not _MISSING) is o,
    "gt": _ordered(lambda a, b: a > b),
    "gte": _ordered(lambda a, b: a >= b),
    "lt": _ordered(lambda a, b: a < b),
    "lte": _ordered(lambda a, b: a <= b),
}
OPERATOR_NAMES = (*_OPERATORS, "glob", "regex")


class WhereError(SynapseError, ValueError):
    """A ``where`` block that cannot compile; ``path`` locates it in the config."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        self.path = path
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Clause:
    """One condition on one body path."""

    path: str
    op: str
    operand: Any
    test: Callable[[Any], bool]
    parts: tuple[str, ...]

    def holds(self, body: Any) -> bool:
        return self.test(lookup(body, self.parts))

    def describe(self) -> str:
        return f"{self.path} {self.op} {self.operand!r}"


@dataclass(frozen=True, slots=True)
class Filter:
    """A compiled ``where`` block: every clause, one of ``any_of``, none of ``none_of``."""

    clauses: tuple[Clause, ...]
    any_of: tuple[Filter, ...] = ()
    none_of: Filter | None = None

    def failing(self, body: Any) -> Clause | Filter | None:
        """The first part of the block that fails for ``body``: a clause, this block (none
        of ``any_of`` held) or ``none_of`` (it held); None when the block holds. The one
        test behind ``holds`` (the routing decision) and ``why_not`` (its explanation)."""
        for clause in self.clauses:
            if not clause.holds(body):
                return clause
        if self.any_of and not any(f.failing(body) is None for f in self.any_of):
            return self
        if self.none_of is not None and self.none_of.failing(body) is None:
            return self.none_of
        return None

    def holds(self, body: Any) -> bool:
        return self.failing(body) is None

    def why_not(self, body: Any) -> str | None:
        """The first condition that fails for ``body``, readable; None when it holds."""
        part = self.failing(body)
        if part is None:
            return None
        if isinstance(part, Clause):
            value = lookup(body, part.parts)
            got = "missing" if value is _MISSING else repr(value)
            return f"{part.describe()} (got {got})"
        if part is self:
            reasons = "; ".join(f.why_not(body) or "?" for f in self.any_of)
            return f"any: none held ({reasons})"
        return "not: the negated block held"


def compile_where(spec: Mapping[str, Any], at: tuple[str | int, ...] = ()) -> Filter:
    """Compile one ``where`` mapping; raise WhereError naming the offending path."""
    clauses: list[Clause] = []
    any_of: tuple[Filter, ...] = ()
    none_of: Filter | None = None
    for key, condition in spec.items():
        if key == "any":
            if not isinstance(condition, list) or not condition:
                raise WhereError((*at, key), "any: takes a non-empty list of where blocks")
            any_of = tuple(
                compile_where(_mapping(block, (*at, key, i)), (*at, key, i))
                for i, block in enumerate(condition)
            )
        elif key == "not":
            none_of = compile_where(_mapping(condition, (*at, key)), (*at, key))
        else:
            clauses.extend(_compile_condition(key, condition, (*at, key)))
    return Filter(tuple(clauses), any_of, none_of)


def _mapping(value: Any, at: tuple[str | int, ...]) -> Mapping[str, Any]:
    if not isinstance(value, dict) or not value:
        raise WhereError(at, "expected a non-empty mapping of path: condition")
    return value


def _compile_condition(path: str, condition: Any, at: tuple[str | int, ...]) -> list[Clause]:
    parts = tuple(path.split("."))
    if not path or "" in parts:
        raise WhereError(at, f"bad path {path!r}: dotted names, none empty")
    if not isinstance(condition, dict):
        operator_spec: dict[str, Any] = {"eq": condition}
    else:
        operator_spec = condition
    out = []
    for op, operand in operator_spec.items():
        out.append(Clause(path, op, operand, _predicate(op, operand, (*at, op)), parts))
    return out


def _predicate(op: str, operand: Any, at: tuple[str | int, ...]) -> Callable[[Any], bool]:
    if op == "glob":
        if not isinstance(operand, str):
            raise WhereError(at, "glob takes a string")
        glob = compile_glob(operand)
        return lambda v: isinstance(v, str) and glob(v)
    if op == "regex":
        if not isinstance(operand, str):
            raise WhereError(at, "regex takes a string")
        try:
            search = compile_search(operand)  # linear time: a producer cannot stall routing
        except RegexError as exc:
            raise WhereError(at, f"bad regex {exc}") from exc
        return lambda v: isinstance(v, str) and search(v)
    check = _OPERATORS.get(op)
    if check is None:
        raise WhereError(at, f"unknown operator {op!r}; one of {', '.join(OPERATOR_NAMES)}")
    if op in ("in", "not_in") and not isinstance(operand, list):
        raise WhereError(at, f"{op} takes a list")
    if op == "exists" and not isinstance(operand, bool):
        raise WhereError(at, "exists takes true or false")
    return lambda v: check(v, operand)
