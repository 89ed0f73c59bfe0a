"""Globs and `where` filters, pure: every operator, paths, strictness, compile errors."""

from __future__ import annotations

from typing import Any

import pytest

from synapse.matching import WhereError, compile_glob, compile_where, lookup

BODY: dict[str, Any] = {
    "stage": "production",
    "version": "1.10.0",
    "n": 5,
    "x": 2.5,
    "flag": True,
    "off": False,
    "one": 1,
    "zero": 0,
    "none": None,
    "tags": ["a", "b", {"deep": "yes"}],
    "metrics": {"accuracy": 0.97, "nested": {"k": "v"}},
    "empty": "",
}


def holds(where: dict[str, Any], body: Any = BODY) -> bool:
    return compile_where(where).holds(body)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"stage": "production"}, True),
        ({"stage": "staging"}, False),
        ({"n": 5}, True),
        ({"n": 5.0}, True),  # 5 and 5.0 are the same JSON number
        ({"n": "5"}, False),  # a string is not a number
        ({"none": None}, True),
        ({"missing": None}, False),  # missing is not null
        ({"tags": ["a", "b", {"deep": "yes"}]}, True),
        ({"metrics": {"eq": {"accuracy": 0.97, "nested": {"k": "v"}}}}, True),
    ],
)
def test_literal_is_equality(where: dict[str, Any], expected: bool) -> None:
    """A literal condition means strict JSON equality (numbers by value, types kept apart)."""
    assert holds(where) is expected


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"flag": True}, True),
        ({"one": True}, False),  # true never equals 1
        ({"flag": 1}, False),
        ({"off": 0}, False),
        ({"zero": False}, False),
        ({"one": {"eq": 1}}, True),
        ({"flag": {"ne": 1}}, True),
        ({"one": {"in": [True, "1"]}}, False),
        ({"flag": {"in": [1, 2]}}, False),
        ({"flag": {"gt": 0}}, False),  # booleans are not ordered
        ({"one": {"gte": False}}, False),
        ({"tags": {"eq": ["a", "b", {"deep": True}]}}, False),
    ],
)
def test_bool_and_number_never_mix(where: dict[str, Any], expected: bool) -> None:
    """Booleans are not numbers: no equality, membership or ordering across them."""
    assert holds(where) is expected


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"stage": {"eq": "production"}}, True),
        ({"stage": {"eq": "x"}}, False),
        ({"missing": {"eq": None}}, False),
        ({"stage": {"ne": "x"}}, True),
        ({"stage": {"ne": "production"}}, False),
        ({"missing": {"ne": "x"}}, True),  # a missing path is "not equal"
        ({"stage": {"in": ["staging", "production"]}}, True),
        ({"stage": {"in": ["staging"]}}, False),
        ({"missing": {"in": [None]}}, False),
        ({"stage": {"not_in": ["staging"]}}, True),
        ({"stage": {"not_in": ["production"]}}, False),
        ({"missing": {"not_in": ["x"]}}, True),
        ({"stage": {"exists": True}}, True),
        ({"none": {"exists": True}}, True),  # null is present
        ({"missing": {"exists": True}}, False),
        ({"missing": {"exists": False}}, True),
        ({"stage": {"exists": False}}, False),
    ],
)
def test_equality_membership_existence(where: dict[str, Any], expected: bool) -> None:
    """eq, ne, in, not_in and exists, including how each treats a missing path."""
    assert holds(where) is expected


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"n": {"gt": 4}}, True),
        ({"n": {"gt": 5}}, False),
        ({"n": {"gte": 5}}, True),
        ({"n": {"gte": 5.5}}, False),
        ({"n": {"lt": 6}}, True),
        ({"n": {"lt": 5}}, False),
        ({"n": {"lte": 5}}, True),
        ({"n": {"lte": 4.99}}, False),
        ({"x": {"gt": 2}}, True),  # int operand, float value
        ({"metrics.accuracy": {"gte": 0.9}}, True),
        ({"metrics.accuracy": {"gte": 0.98}}, False),
        ({"stage": {"gt": "p"}}, True),  # strings order as strings
        ({"stage": {"lt": "p"}}, False),
        ({"version": {"lt": "1.9"}}, True),  # lexicographic, not semantic
        ({"stage": {"gte": "production"}}, True),
        ({"stage": {"lte": "production"}}, True),
        ({"n": {"gt": "4"}}, False),  # number vs string: false both ways
        ({"stage": {"lt": 10}}, False),
        ({"stage": {"gt": 10}}, False),
        ({"none": {"gt": 0}}, False),
        ({"none": {"lt": 0}}, False),
        ({"tags": {"gt": 0}}, False),
        ({"missing": {"gt": 0}}, False),
        ({"missing": {"lte": 0}}, False),
    ],
)
def test_ordering(where: dict[str, Any], expected: bool) -> None:
    """gt/gte/lt/lte compare numbers with numbers, strings with strings, else false."""
    assert holds(where) is expected


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"stage": {"glob": "prod*"}}, True),
        ({"stage": {"glob": "Prod*"}}, False),  # case-sensitive
        ({"stage": {"glob": "production"}}, True),  # no glob chars: equality
        ({"stage": {"glob": "product"}}, False),  # whole-string match
        ({"version": {"glob": "1.*"}}, True),
        ({"n": {"glob": "*"}}, False),  # only strings match a glob
        ({"missing": {"glob": "*"}}, False),
        ({"stage": {"regex": "^prod"}}, True),
        ({"stage": {"regex": "duct"}}, True),  # search, not full match
        ({"stage": {"regex": "^duct"}}, False),
        ({"stage": {"regex": "PROD"}}, False),
        ({"stage": {"regex": "(?i)PROD"}}, True),
        ({"n": {"regex": "5"}}, False),  # only strings match a regex
        ({"missing": {"regex": ".*"}}, False),
    ],
)
def test_glob_and_regex(where: dict[str, Any], expected: bool) -> None:
    """glob matches the whole string case-sensitively; regex searches; non-strings fail."""
    assert holds(where) is expected


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"any": [{"stage": "x"}, {"n": 5}]}, True),
        ({"any": [{"stage": "x"}, {"n": 6}]}, False),
        ({"not": {"stage": "x"}}, True),
        ({"not": {"stage": "production"}}, False),
        ({"not": {"stage": "production", "n": 6}}, True),  # not(a and b)
        ({"stage": "production", "any": [{"n": 5}], "not": {"flag": False}}, True),
        ({"stage": "production", "any": [{"n": 5}], "not": {"flag": True}}, False),
        ({"any": [{"not": {"stage": "production"}}, {"any": [{"flag": True}]}]}, True),
        ({"n": {"gt": 1, "lt": 10}}, True),  # several operators on one path: all hold
        ({"n": {"gt": 1, "lt": 5}}, False),
    ],
)
def test_any_not_and_conjunction(where: dict[str, Any], expected: bool) -> None:
    """any: holds if one block holds; not: if its block fails; everything else is AND."""
    assert holds(where) is expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("metrics.nested.k", "v"),
        ("tags.0", "a"),
        ("tags.2.deep", "yes"),
        ("tags.3", None),  # out of range
        ("tags.-1", None),  # no negative indices
        ("tags.\u00b2", None),  # a digit to str.isdigit, not to int()
        ("tags.\u0661", None),  # Arabic-Indic one: only ASCII digits index
        ("tags.x", None),
        ("stage.0", None),  # strings are not indexable
        ("metrics.accuracy.x", None),
        ("nope.deeper", None),
        ("none.x", None),
    ],
)
def test_dotted_paths(path: str, expected: Any) -> None:
    """Dotted paths reach into objects and lists (by index); anything else is missing."""
    where = compile_where({path: {"exists": True}})
    assert where.holds(BODY) is (expected is not None)
    if expected is not None:
        assert lookup(BODY, tuple(path.split("."))) == expected
        assert compile_where({path: expected}).holds(BODY)


def test_non_object_body_has_no_paths() -> None:
    """A body that is not an object has no paths: every positive clause fails."""
    assert not holds({"a": {"exists": True}}, ["a"])
    assert holds({"a": {"exists": False}}, "a")


def test_why_not_names_the_failing_clause() -> None:
    """why_not names the first failing condition and the value it saw, None when all hold."""
    where = compile_where({"stage": "production", "metrics.accuracy": {"gte": 0.99}})
    reason = where.why_not(BODY)
    assert reason is not None
    assert "metrics.accuracy gte 0.99" in reason and "0.97" in reason
    assert compile_where({"missing": 1}).why_not(BODY) == "missing eq 1 (got missing)"
    assert compile_where({"stage": "production"}).why_not(BODY) is None
    any_reason = compile_where({"any": [{"n": 1}, {"n": 2}]}).why_not(BODY)
    assert any_reason is not None and any_reason.startswith("any:")
    assert compile_where({"not": {"n": 5}}).why_not(BODY) == "not: the negated block held"


@pytest.mark.parametrize(
    ("where", "path", "message"),
    [
        ({"a": {"regex": "("}}, ("a", "regex"), "bad regex"),
        ({"a": {"regex": 5}}, ("a", "regex"), "regex takes a string"),
        ({"a": {"glob": 5}}, ("a", "glob"), "glob takes a string"),
        ({"a": {"like": "x"}}, ("a", "like"), "unknown operator 'like'"),
        ({"a": {"in": "x"}}, ("a", "in"), "in takes a list"),
        ({"a": {"not_in": 3}}, ("a", "not_in"), "not_in takes a list"),
        ({"a": {"exists": 1}}, ("a", "exists"), "exists takes true or false"),
        ({"a..b": 1}, ("a..b",), "bad path"),
        ({"": 1}, ("",), "bad path"),
        ({"any": []}, ("any",), "non-empty list"),
        ({"any": [{}]}, ("any", 0), "non-empty mapping"),
        ({"not": "x"}, ("not",), "non-empty mapping"),
        ({"any": [{"a": {"regex": "["}}]}, ("any", 0, "a", "regex"), "bad regex"),
    ],
)
def test_compile_errors_name_their_path(
    where: dict[str, Any], path: tuple[str | int, ...], message: str
) -> None:
    """A bad where block fails to compile with the offending path, for file:line errors."""
    with pytest.raises(WhereError) as caught:
        compile_where(where, ("routes", 0, "where"))
    assert caught.value.path == ("routes", 0, "where", *path)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("model.*", "model.ready", True),
        ("model.*", "model.ready.v2", True),  # * crosses dots
        ("*", "a.b.c", True),
        ("*.error", "svc.db.error", True),
        ("model.*", "Model.ready", False),  # case-sensitive
        ("MODEL.READY", "model.ready", False),
        ("model.?", "model.a", True),
        ("model.?", "model.ab", False),
        ("model.?", "model.", False),
        ("v[12]", "v1", True),
        ("v[12]", "v3", False),
        ("v[!12]", "v3", True),
        ("v[a-c]", "vb", True),
        ("model.ready", "model.ready", True),  # plain name: equality
        ("model.ready", "model.readyx", False),
        ("model.*", "xmodel.ready", False),  # anchored at the start
        ("ingress:*", "ingress:eu", True),
        ("ingress:*", "ingress", False),
        ("a.b", "aXb", False),  # a dot is a literal dot
        ("a+b", "aab", False),  # regex metacharacters are literal
        ("*", "", True),
        ("x*", "x\ny", True),  # newlines in values do not stop *
    ],
)
def test_globs(pattern: str, value: str, expected: bool) -> None:
    """Shell-style globs: case-sensitive, `*` crosses dots, `?` one char, `[...]` sets."""
    assert compile_glob(pattern)(value) is expected


def test_holds_and_why_not_are_one_test() -> None:
    """Over many bodies, a block holds exactly when why_not has nothing to say."""
    import itertools

    where = compile_where(
        {
            "stage": {"in": ["production", "canary"]},
            "any": [{"n": {"gte": 2}}, {"tag": {"exists": True}}],
            "not": {"blocked": True},
        }
    )
    values = {
        "stage": ["production", "staging", None],
        "n": [1, 3, None],
        "tag": ["x", None],
        "blocked": [True, False, None],
    }
    seen = set()
    for combo in itertools.product(*values.values()):
        body = {k: v for k, v in zip(values, combo, strict=True) if v is not None}
        reason = where.why_not(body)
        assert where.holds(body) == (reason is None), body
        seen.add(reason.split(" ")[0] if reason else None)
    assert {None, "stage", "any:", "not:"} <= seen  # every kind of failure was met
