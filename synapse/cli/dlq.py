"""``synapse dlq``: list, show, redrive and purge dead letters.

Redrive re-publishes a dead letter's ORIGINAL fields (every ``synapse-*`` field the
router added is stripped) to its original source, or ``--to``, and deletes the dead
letter in the same Lua script, after the write succeeded: a kill at any instant
loses nothing and duplicates nothing, and a rerun picks up where it stopped. Each
redrive bumps ``synapse-redrives``; entries at the limit are refused unless
``--force``. Truncated dead letters are refused: their original is gone.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import redis

from synapse import keys
from synapse.cli import common
from synapse.cli.progress import Progress
from synapse.events import pairs

DEFAULT_MAX_REDRIVES = 3
BATCH = 50

# KEYS[1]: the dead-letter stream; KEYS[1+e]: entry e's target.
# ARGV: count, then per entry: dead-letter id, field count, fields...
# A dead letter already gone is skipped (a rerun, a concurrent redrive); a refused
# XADD (WRONGTYPE...) writes nothing and keeps the dead letter.
REDRIVE_LUA = """
local out = {}
local i = 2
for e = 1, tonumber(ARGV[1]) do
  local id, n = ARGV[i], tonumber(ARGV[i + 1])
  local fields = {}
  for k = 1, n do fields[k] = ARGV[i + 1 + k] end
  i = i + 2 + n
  if #redis.call('XRANGE', KEYS[1], id, id) == 0 then
    out[e] = {'gone', ''}
  else
    local r = redis.pcall('XADD', KEYS[1 + e], '*', unpack(fields))
    if type(r) == 'table' and r.err then
      out[e] = {'error', r.err}
    else
      redis.call('XDEL', KEYS[1], id)
      out[e] = {'ok', r}
    end
  end
end
return out
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    entry_id: str
    fields: list[bytes]

    @property
    def meta(self) -> dict[bytes, bytes]:
        return pairs(self.fields)

    def get(self, name: bytes) -> str:
        return common.text(self.meta.get(name))

    @property
    def redrives(self) -> int:
        try:
            return int(self.get(keys.F_REDRIVES) or 0)
        except ValueError:
            return 0

    def original(self) -> list[bytes]:
        """The fields as the producer wrote them: every synapse-* field stripped."""
        out: list[bytes] = []
        for i in range(0, len(self.fields) - 1, 2):
            if not self.fields[i].startswith(b"synapse-"):
                out += (self.fields[i], self.fields[i + 1])
        return out

    def as_json(self, full: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.entry_id,
            "time": self.get(keys.F_TIME) or common.id_time(self.entry_id),
            "reason": self.get(keys.F_REASON),
            "error": self.get(keys.F_ERROR),
            "source": self.get(keys.F_SOURCE),
            "source_id": self.get(keys.F_ID),
            "type": self.get(b"type") or None,
            "deliveries": int(self.get(keys.F_DELIVERIES) or 0),
            "redrives": self.redrives,
            "config": self.get(keys.F_CONFIG),
            "truncated": self.get(keys.F_TRUNCATED) or None,
        }
        if full:
            data["fields"] = {common.text(k): common.text(v) for k, v in self.meta.items()}
        return data


def select(
    client: redis.Redis,
    stream: str,
    *,
    reasons: tuple[str, ...] = (),
    sources: tuple[str, ...] = (),
    ids: tuple[str, ...] = (),
    since: str | None = None,
    until: str | None = None,
) -> Iterator[DeadLetter]:
    """Dead letters matching every filter, oldest first, up to the last one present now."""
    if ids:
        for entry_id in ids:
            for eid, fields in common.xrange(client, stream, entry_id, entry_id, 1):
                yield DeadLetter(entry_id=common.text(eid), fields=fields)
        return
    end = until or common.last_id(client, stream)
    if end is None:
        return
    for eid, fields in common.scan_range(client, stream, since or "-", end):
        letter = DeadLetter(entry_id=common.text(eid), fields=fields)
        if reasons and letter.get(keys.F_REASON) not in reasons:
            continue
        if sources and letter.get(keys.F_SOURCE) not in sources:
            continue
        yield letter


def _stream(stream: str | None, config_path: Path) -> str:
    if stream:
        return stream
    table = common.table_or_none(config_path)
    return table.settings.dead_letter if table else keys.DEFAULT_DEAD_LETTER


def filters(func: Any) -> Any:
    func = click.option("--until", help="Up to this time or id (ISO 8601, -2h, id).")(func)
    func = click.option("--since", help="From this time or id (ISO 8601, -2h, id).")(func)
    func = click.option("--source", "sources", multiple=True, help="Original source (repeat).")(
        func
    )
    func = click.option("--reason", "reasons", multiple=True, help="Reason code (repeat).")(func)
    return func


def common_dlq(func: Any) -> Any:
    func = click.option("--stream", help="Dead-letter stream (default: the config's).")(func)
    func = common.config_option(func)
    func = common.connection_options(func)
    func = common.json_option(func)
    return common.debug_option(func)


@click.group()
def dlq() -> None:
    """Dead letters: list, show, redrive, purge."""


@dlq.command("list")
@common_dlq
@filters
@click.option("--limit", default=50, show_default=True, help="Entries to show (0: all).")
def list_cmd(
    config_path: Path,
    as_json: bool,
    stream: str | None,
    reasons: tuple[str, ...],
    sources: tuple[str, ...],
    since: str | None,
    until: str | None,
    limit: int,
) -> None:
    """Dead letters, oldest first, with counts by reason."""
    name = _stream(stream, config_path)
    client = common.connect()
    shown: list[DeadLetter] = []
    by_reason: Counter[str] = Counter()
    for letter in select(
        client,
        name,
        reasons=reasons,
        sources=sources,
        since=common.parse_when(since) if since else None,
        until=common.parse_when(until) if until else None,
    ):
        by_reason[letter.get(keys.F_REASON)] += 1
        if not limit or len(shown) < limit:
            shown.append(letter)
    total = sum(by_reason.values())
    if as_json:
        common.emit_json(
            {
                "stream": name,
                "total": total,
                "by_reason": dict(by_reason),
                "entries": [letter.as_json() for letter in shown],
            }
        )
        return
    if not total:
        click.echo(f"{name}: no dead letters")
        return
    rows = []
    for letter in shown:
        info = letter.as_json()
        error = info["error"] if len(info["error"]) <= 60 else info["error"][:57] + "..."
        rows.append(
            [
                info["id"],
                info["reason"],
                info["source"],
                info["type"] or "-",
                str(info["redrives"]),
                "yes" if info["truncated"] else "",
                error,
            ]
        )
    header = ["ID", "REASON", "SOURCE", "TYPE", "REDRIVES", "TRUNC", "ERROR"]
    for line in common.table_rows(rows, header):
        click.echo(line)
    counts = ", ".join(f"{r} {n}" for r, n in by_reason.most_common())
    more = f" (showing {len(shown)})" if len(shown) < total else ""
    click.echo(f"{total} dead letters in {name}{more}: {counts}")


@dlq.command("show")
@common_dlq
@click.argument("entry_id", metavar="ID")
def show_cmd(config_path: Path, as_json: bool, stream: str | None, entry_id: str) -> None:
    """One dead letter: why, where from, and every original field."""
    name = _stream(stream, config_path)
    found = list(select(common.connect(), name, ids=(entry_id,)))
    if not found:
        raise common.Failure(f"no dead letter {entry_id} in {name}")
    letter = found[0]
    if as_json:
        common.emit_json(letter.as_json(full=True))
        return
    info = letter.as_json()
    for key in ("id", "time", "reason", "error", "source", "source_id", "deliveries", "redrives"):
        click.echo(f"{key + ':':12} {info[key]}")
    if info["truncated"]:
        click.echo(f"{'truncated:':12} {info['truncated']} (cannot be redriven)")
    click.echo("fields:")
    for i in range(0, len(letter.original()) - 1, 2):
        name_, value = letter.original()[i], letter.original()[i + 1]
        click.echo(f"  {common.text(name_)}: {common.text(value)}")


@dlq.command("redrive")
@common_dlq
@filters
@click.option("--id", "ids", multiple=True, help="Only this dead-letter id (repeat).")
@click.option("--to", "target", help="Publish here instead of the original source.")
@click.option("--dry-run", is_flag=True, help="Say what would happen; change nothing.")
@click.option("--rate", type=float, help="At most N entries per second.")
@click.option("--limit", type=int, help="At most N entries.")
@click.option("--force", is_flag=True, help="Redrive entries past --max-redrives too.")
@click.option("--max-redrives", default=DEFAULT_MAX_REDRIVES, show_default=True)
def redrive_cmd(
    config_path: Path,
    as_json: bool,
    stream: str | None,
    reasons: tuple[str, ...],
    sources: tuple[str, ...],
    since: str | None,
    until: str | None,
    ids: tuple[str, ...],
    target: str | None,
    dry_run: bool,
    rate: float | None,
    limit: int | None,
    force: bool,
    max_redrives: int,
) -> None:
    """Re-publish dead letters to their source (or --to), deleting each after its write.

    Exit 1 when any entry was refused (truncated, over the redrive limit, no source).
    """
    name = _stream(stream, config_path)
    client = common.connect()
    letters = select(
        client,
        name,
        reasons=reasons,
        sources=sources,
        ids=ids,
        since=common.parse_when(since) if since else None,
        until=common.parse_when(until) if until else None,
    )
    script = client.register_script(REDRIVE_LUA)
    tally: Counter[str] = Counter()
    refused: list[dict[str, str]] = []
    moved: list[dict[str, str]] = []
    pacer = common.Pacer(rate)
    batch_size = max(1, min(BATCH, int(rate) // 10)) if rate else BATCH
    pending: list[tuple[DeadLetter, str, list[bytes]]] = []

    def flush() -> None:
        if not pending:
            return
        if dry_run:
            for letter, dest, _ in pending:
                moved.append({"id": letter.entry_id, "to": dest, "new_id": ""})
                tally["would_redrive"] += 1
        else:
            argv: list[Any] = [len(pending)]
            for letter, _, fields in pending:
                argv += [letter.entry_id, len(fields), *fields]
            replies = script(keys=[name, *(d for _, d, _ in pending)], args=argv)
            for (letter, dest, _), (status, detail) in zip(pending, replies, strict=True):
                status_s, detail_s = common.text(status), common.text(detail)
                if status_s == "ok":
                    tally["redriven"] += 1
                    moved.append({"id": letter.entry_id, "to": dest, "new_id": detail_s})
                elif status_s == "gone":
                    tally["gone"] += 1
                else:
                    tally["failed"] += 1
                    refused.append({"id": letter.entry_id, "why": f"{dest}: {detail_s}"})
        progress.advance(len(pending))
        pacer.wait(len(pending))
        pending.clear()

    total = len(ids) if ids else int(client.xlen(name)) if client.exists(name) else 0
    if limit is not None:
        total = min(total, limit)
    with Progress("redriving", as_json, total=total) as progress:
        try:
            for letter in letters:
                if limit is not None and tally["selected"] >= limit:
                    break
                tally["selected"] += 1
                why = _refusal(letter, target, max_redrives, force)
                if why:
                    tally["refused"] += 1
                    refused.append({"id": letter.entry_id, "why": why})
                    progress.advance(1)
                    continue
                dest = target or letter.get(keys.F_SOURCE)
                fields = [*letter.original(), keys.F_REDRIVES, str(letter.redrives + 1).encode()]
                pending.append((letter, dest, fields))
                if len(pending) >= batch_size:
                    flush()
            flush()
        except KeyboardInterrupt:
            tally["interrupted"] = 1
    _report("redrive", name, tally, refused, moved, as_json, dry_run)
    if tally["interrupted"]:
        sys.exit(common.EXIT_INTERRUPTED)
    sys.exit(common.EXIT_FAILED if refused else common.EXIT_OK)


def _refusal(letter: DeadLetter, target: str | None, max_redrives: int, force: bool) -> str:
    truncated = letter.get(keys.F_TRUNCATED)
    if truncated:
        return f"truncated ({truncated}): the original is gone; see dlq show {letter.entry_id}"
    if letter.redrives >= max_redrives and not force:
        return f"already redriven {letter.redrives} times (limit {max_redrives}; --force)"
    if not (target or letter.get(keys.F_SOURCE)):
        return "no synapse-source field; pass --to"
    return ""


def _report(
    what: str,
    stream: str,
    tally: Counter[str],
    refused: list[dict[str, str]],
    moved: list[dict[str, str]],
    as_json: bool,
    dry_run: bool,
) -> None:
    if as_json:
        common.emit_json(
            {
                "stream": stream,
                "dry_run": dry_run,
                "interrupted": bool(tally["interrupted"]),
                "selected": tally["selected"],
                "redriven": tally["redriven"],
                "would_redrive": tally["would_redrive"],
                "already_gone": tally["gone"],
                "refused": refused,
                "entries": moved,
            }
        )
        return
    if dry_run:
        for item in moved:
            click.echo(f"would redrive {item['id']} -> {item['to']}")
    for item in refused:
        click.echo(f"refused {item['id']}: {item['why']}", err=True)
    done = tally["would_redrive"] if dry_run else tally["redriven"]
    verb = "would redrive" if dry_run else "redriven"
    parts = [f"{verb} {done}", f"refused {len(refused)}"]
    if tally["gone"]:
        parts.append(f"already gone {tally['gone']}")
    if tally["interrupted"]:
        parts.append("interrupted: rerun to continue (nothing lost)")
    click.echo(f"{what} {stream}: {', '.join(parts)}")


@dlq.command("purge")
@common_dlq
@filters
@click.option("--yes", is_flag=True, help="Do not ask.")
@click.option("--dry-run", is_flag=True, help="Count what would go; delete nothing.")
def purge_cmd(
    config_path: Path,
    as_json: bool,
    stream: str | None,
    reasons: tuple[str, ...],
    sources: tuple[str, ...],
    since: str | None,
    until: str | None,
    yes: bool,
    dry_run: bool,
) -> None:
    """Delete dead letters (all, or those matching the filters); asks first unless --yes."""
    name = _stream(stream, config_path)
    client = common.connect()
    end = common.parse_when(until) if until else common.last_id(client, name)
    start = common.parse_when(since) if since else None
    chosen = [
        letter.entry_id
        for letter in select(client, name, reasons=reasons, sources=sources, since=start, until=end)
    ]
    if dry_run or not chosen:
        if as_json:
            common.emit_json(
                {"stream": name, "dry_run": dry_run, "matched": len(chosen), "deleted": 0}
            )
        else:
            click.echo(
                f"purge {name}: {len(chosen)} dead letters would be deleted"
                if dry_run
                else f"purge {name}: nothing to delete"
            )
        return
    if not yes:
        click.confirm(f"Delete {len(chosen)} dead letters from {name}?", abort=True, err=True)
    deleted = 0
    with Progress("purging", as_json, total=len(chosen)) as progress:
        try:
            if not (reasons or sources or since or until):
                # Everything up to the newest entry seen: dead letters written since stay.
                deleted = int(
                    common.call(client, "XTRIM", name, "MINID", common.next_id(chosen[-1]))
                )
                progress.advance(deleted)
            else:
                for i in range(0, len(chosen), 500):
                    deleted += int(client.xdel(name, *chosen[i : i + 500]))
                    progress.advance(len(chosen[i : i + 500]))
        except KeyboardInterrupt:
            click.echo(f"purge {name}: interrupted after {deleted}", err=True)
            sys.exit(common.EXIT_INTERRUPTED)
    if as_json:
        common.emit_json(
            {"stream": name, "dry_run": False, "matched": len(chosen), "deleted": deleted}
        )
    else:
        click.echo(f"purge {name}: deleted {deleted}")
