"""Warnings about a valid routing table: routes that can never match, likely typos, and
on Kafka the retention rules that Kafka does not apply (the topics' own retention does).

Pure functions over a compiled table. Glob overlap is decided exactly: two
shell-style globs intersect when some string matches both, found by a search over
pairs of positions in their token lists (``*``, ``?``, ``[...]``, literals).
"""

from __future__ import annotations

from dataclasses import dataclass
from difflib import SequenceMatcher, get_close_matches
from functools import cache

from synapse.config import RoutingTable
from synapse.kafka.url import Kind
from synapse.matching import is_glob

#: A token: None for ``*``; else (negated, chars) for one character.
Token = tuple[bool, frozenset[str]] | None


@dataclass(frozen=True, slots=True)
class Warning_:
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: warning: {self.message}"


def tokens(glob: str) -> tuple[Token, ...]:
    """fnmatch's reading of a glob as tokens."""
    out: list[Token] = []
    i = 0
    while i < len(glob):
        c = glob[i]
        i += 1
        if c == "*":
            if not out or out[-1] is not None:
                out.append(None)
        elif c == "?":
            out.append((True, frozenset()))
        elif c == "[":
            end = glob.find("]", i + 1 if i < len(glob) and glob[i] in "!]" else i)
            if end < 0:
                out.append((False, frozenset("[")))
                continue
            body, i = glob[i:end], end + 1
            negated = body.startswith("!")
            out.append((negated, _chars(body[1:] if negated else body)))
        else:
            out.append((False, frozenset(c)))
    return tuple(out)


def _chars(body: str) -> frozenset[str]:
    chars: set[str] = set()
    j = 0
    while j < len(body):
        if j + 2 < len(body) and body[j + 1] == "-":
            lo, hi = ord(body[j]), ord(body[j + 2])
            chars.update(chr(k) for k in range(lo, min(hi, lo + 4096) + 1))
            j += 3
        else:
            chars.add(body[j])
            j += 1
    return frozenset(chars)


def _one_char_overlap(a: tuple[bool, frozenset[str]], b: tuple[bool, frozenset[str]]) -> bool:
    (neg_a, set_a), (neg_b, set_b) = a, b
    if neg_a and neg_b:
        return True  # the alphabet is unbounded
    if neg_a:
        return bool(set_b - set_a)
    if neg_b:
        return bool(set_a - set_b)
    return bool(set_a & set_b)


def globs_overlap(a: str, b: str) -> bool:
    """Whether some string matches both globs."""
    p, q = tokens(a), tokens(b)

    @cache
    def meet(i: int, j: int) -> bool:
        if i == len(p) and j == len(q):
            return True
        if i < len(p) and p[i] is None:
            return meet(i + 1, j) or (j < len(q) and meet(i, j + 1))
        if j < len(q) and q[j] is None:
            return meet(i, j + 1) or (i < len(p) and meet(i + 1, j))
        if i == len(p) or j == len(q):
            return False
        pi, qj = p[i], q[j]
        assert pi is not None and qj is not None
        return _one_char_overlap(pi, qj) and meet(i + 1, j + 1)

    return meet(0, 0)


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def lint(table: RoutingTable, kind: Kind = "redis") -> list[Warning_]:
    """Every warning for ``table`` on a backend of ``kind``: the routes' in route order,
    then the retention rules'."""
    name = str(table.path)
    found: list[Warning_] = []
    schema_globs = [glob for glob, _, _ in table.schemas.rules]
    for route in table.routes:
        if table.settings.require_schema and not any(
            globs_overlap(route.type_glob, g) for g in schema_globs
        ):
            found.append(
                Warning_(
                    name,
                    route.line,
                    f"route {route.name!r} can never match: require_schema is on and no "
                    f"schema glob covers type {route.type_glob!r}",
                )
            )
        if route.source_glob is not None and not any(
            globs_overlap(route.source_glob, s) for s in table.sources
        ):
            found.append(
                Warning_(
                    name,
                    route.line,
                    f"route {route.name!r} can never match: source {route.source_glob!r} "
                    f"matches no configured source ({', '.join(table.sources)})",
                )
            )
    found += _typos(table, name)
    if kind == "kafka":
        found += _kafka_retention(table, name)
    return found


def _kafka_retention(table: RoutingTable, name: str) -> list[Warning_]:
    """Retention rules a Kafka router does not apply: it trims no topic by age (the
    retention chore is Redis's: ``KafkaBackend.trim_by_age`` does nothing) and a topic has
    no length cap; each topic's own ``retention.ms`` / ``retention.bytes`` apply instead."""
    ages = {glob: ms for glob, _, ms in table.max_ages}
    caps = {glob for glob, _, _ in table.retention}
    found = []
    for glob, line in table.retention_lines.items():
        if glob in ages:
            found.append(
                Warning_(
                    name,
                    line,
                    f"retention {glob!r}: max_age is not applied on Kafka (the router trims "
                    f"no topic by age): set the topics' retention.ms={ages[glob]} instead",
                )
            )
        if glob in caps:
            found.append(
                Warning_(
                    name,
                    line,
                    f"retention {glob!r}: maxlen is not applied on Kafka (no topic is capped "
                    "by length): bound the topics with retention.bytes or retention.ms instead",
                )
            )
    return found


def known_names(table: RoutingTable) -> dict[str, str]:
    """Stream names the table vouches for besides destinations, with what each is."""
    known: dict[str, str] = {}
    for rel in table.schemas.files:
        folder, sep, _ = rel.partition("/")
        if sep:
            known.setdefault(folder, "a schema folder")
    for glob, _, _ in table.retention:
        if not is_glob(glob):
            known.setdefault(glob, "a retention rule")
    for source in table.sources:
        if not is_glob(source):
            known[source] = "a source"
    if table.settings.unrouted not in ("dead-letter", "drop"):
        known[table.settings.unrouted] = "the unrouted stream"
    known[table.settings.dead_letter] = "the dead-letter stream"
    return known


def _typos(table: RoutingTable, name: str) -> list[Warning_]:
    """Destinations that look like typos of a known name (did you mean ...?).

    A destination the table vouches for elsewhere (a schema folder, source, retention rule)
    is taken as meant. Otherwise a close spelling of a known name is a typo; between two
    destinations, the one fewer routes use is the suspect (on a tie, the pair once).
    """
    uses: dict[str, list[str]] = {}
    for route in table.routes:
        for dest in route.to:
            uses.setdefault(dest, []).append(route.name)
    known = known_names(table)
    found = []
    for dest, routes in uses.items():
        if is_glob(dest) or len(dest) < 5 or dest in known:
            continue  # a name the table vouches for is meant
        candidates = {
            other: known.get(other) or f"used by route {', '.join(uses[other])}"
            for other in [*known, *uses]
            if other != dest and len(other) >= 5 and not _digits_only(dest, other)
        }
        close = [o for o in candidates if edit_distance(dest, o) <= 2]
        close += [
            o for o in get_close_matches(dest, candidates, n=3, cutoff=0.85) if o not in close
        ]
        for other in sorted(close, key=lambda o: -SequenceMatcher(None, dest, o).ratio()):
            if other not in known:
                mine, theirs = len(routes), len(uses[other])
                if mine > theirs or (mine == theirs and dest < other):
                    continue
            line = next((r.line for r in table.routes if r.name == routes[0]), None)
            found.append(
                Warning_(
                    name,
                    line,
                    f"destination {dest!r} (route {', '.join(routes)}) looks like a typo "
                    f"of {other!r} ({candidates[other]}): did you mean {other!r}?",
                )
            )
            break
    return found


def _digits_only(a: str, b: str) -> bool:
    """Names that differ only in digits (events-v1, events-v2) are a series, not typos."""
    strip = str.maketrans("", "", "0123456789")
    return a.translate(strip) == b.translate(strip)
