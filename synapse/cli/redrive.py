"""``synapse dlq redrive``: re-publish dead letters, each deleted once its copy is written.

Redrive re-publishes a dead letter's ORIGINAL fields (every ``synapse-*`` field the
router added is stripped) to its original source, or ``--to``, and deletes the dead
letter in the same Lua script, after the write succeeded: a kill at any instant
loses nothing and duplicates nothing, and a rerun picks up where it stopped. Each
redrive bumps ``synapse-redrives``; entries at the limit are refused unless
``--force``. Truncated dead letters are refused: their original is gone.

On Redis Cluster a script may only touch one hash slot: a target in the dead-letter
stream's slot (hash tags) is redriven by the same script; any other target is
written first and the dead letter deleted after (``apart``): still nothing lost,
but a kill between the two leaves the dead letter, so a rerun writes it again.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click
from redis.cluster import RedisCluster
from redis.exceptions import ResponseError

from synapse import keys
from synapse.cli import common
from synapse.cli.againcheck import first_pass
from synapse.cli.deadletter import (
    DeadLetter,
    Selection,
    counted,
    dlq_options,
    redrive_fields,
    select,
    selection_options,
    store_kind,
    stream_name,
    target_of,
)
from synapse.cli.dlqstore import RedisDeadLetters
from synapse.cli.progress import Progress
from synapse.cli.redrivereport import refusal, report
from synapse.slots import slot_of

DEFAULT_MAX_REDRIVES = 3
BATCH = 50

# KEYS[1]: the dead-letter stream; KEYS[2]: its redrive-count hash; KEYS[2+e]: entry e's
# target. ARGV: count, the hash's TTL ms, then per entry: dead-letter id, the count field
# it came from, its new count, field count, fields...
# A dead letter already gone is skipped (a rerun, a concurrent redrive); a refused
# XADD (WRONGTYPE...) writes nothing and keeps the dead letter. The new entry's count
# is recorded under "<target>\0<new id>", where the router's dead letter of it will
# point (its synapse-source and synapse-id are the router's, never a producer's).
REDRIVE_LUA = """
local out = {}
local i = 3
for e = 1, tonumber(ARGV[1]) do
  local id, was, count, n = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local fields = {}
  for k = 1, n do fields[k] = ARGV[i + 3 + k] end
  i = i + 4 + n
  if #redis.call('XRANGE', KEYS[1], id, id) == 0 then
    out[e] = {'gone', ''}
  else
    local r = redis.pcall('XADD', KEYS[2 + e], '*', unpack(fields))
    if type(r) == 'table' and r.err then
      out[e] = {'error', r.err}
    else
      redis.call('XDEL', KEYS[1], id)
      redis.call('HDEL', KEYS[2], was)
      redis.call('HSET', KEYS[2], KEYS[2 + e] .. '\\0' .. r, count)
      out[e] = {'ok', r}
    end
  end
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return out
"""
COUNTS_TTL_MS = 30 * 86_400_000


@click.command("redrive")
@dlq_options
@selection_options
@click.option("--id", "ids", multiple=True, help="Only this dead-letter id (repeat).")
@click.option("--to", "target", help="Publish here instead of the original source.")
@click.option("--dry-run", is_flag=True, help="Say what would happen; change nothing.")
@click.option("--rate", type=float, help="At most N entries per second.")
@click.option("--limit", type=int, help="At most N entries.")
@click.option("--force", is_flag=True, help="Redrive entries past --max-redrives too.")
@click.option(
    "--max-redrives",
    default=DEFAULT_MAX_REDRIVES,
    show_default=True,
    help="Refuse dead letters already redriven this many times (--force overrides).",
)
def redrive_cmd(
    config_path: Path,
    as_json: bool,
    stream: str | None,
    chosen: Selection,
    ids: tuple[str, ...],
    target: str | None,
    dry_run: bool,
    rate: float | None,
    limit: int | None,
    force: bool,
    max_redrives: int,
) -> None:
    """Re-publish dead letters to their source (or --to), deleting each after its write.

    First it says how many of the selected dead letters the current table would
    dead-letter again the same way (the router's own dry run on each). Exit 1 when
    any entry was refused (truncated, over the redrive limit, no source).

    On Kafka (--url kafka://...): each copy is produced (the dead letter's key kept), then
    the dead letter marked handled in synapse.marks, so it is redriven once and dlq list
    no longer shows it; a handler's dead letter goes to synapse.retry.<service>.

    \b
    Examples:
      synapse dlq redrive --reason schema_violation --since -2h --dry-run
      synapse dlq redrive --reason destination_error --rate 100
      synapse dlq redrive --id 1714564800000-0 --to ingress
      synapse --url kafka://localhost:9092 dlq redrive --id 0-42 --dry-run
    """
    name = stream_name(stream, config_path)
    table = common.table_or_none(config_path, store_kind())
    if store_kind() == "kafka":
        from synapse.cli.kafkaredrive import redrive_on_kafka

        redrive_on_kafka(
            name,
            table,
            chosen,
            ids,
            target,
            dry_run=dry_run,
            pace=(rate, limit),
            force=force,
            max_redrives=max_redrives,
            as_json=as_json,
        )
    client = common.connect()
    letters = select(client, name, chosen, ids)
    script = client.register_script(REDRIVE_LUA)
    counts_key = keys.redrive_counts(name)
    tally: Counter[str] = Counter()
    refused: list[dict[str, str]] = []
    moved: list[dict[str, str]] = []
    pacer = common.Pacer(rate)
    batch_size = max(1, min(BATCH, int(rate) // 10)) if rate else BATCH
    pending: list[tuple[DeadLetter, str, list[bytes], int]] = []

    def flush() -> None:
        if not pending:
            return
        if dry_run:
            for letter, dest, _, _ in pending:
                moved.append({"id": letter.entry_id, "to": dest, "new_id": ""})
                tally["would_redrive"] += 1
        else:
            together = [i for i, p in enumerate(pending) if not apart(client, name, p[1])]
            replies: list[tuple[Any, Any]] = [("", "")] * len(pending)
            if together:
                argv: list[Any] = [len(together), COUNTS_TTL_MS]
                for i in together:
                    letter, _, fields, count = pending[i]
                    argv += [letter.entry_id, letter.count_field, count, len(fields), *fields]
                targets = (pending[i][1] for i in together)
                found = script(keys=[name, counts_key, *targets], args=argv)
                for i, reply in zip(together, found, strict=True):
                    replies[i] = (reply[0], reply[1])
            for i, (letter, dest, fields, count) in enumerate(pending):
                if i not in together:
                    replies[i] = write_then_delete(
                        client, name, letter, dest, fields, (counts_key, count)
                    )
                    tally["apart"] += 1
            for (letter, dest, _, _), (status, detail) in zip(pending, replies, strict=True):
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

    progress = Progress("redriving", as_json)
    again = first_pass(RedisDeadLetters(client, name), chosen, ids, target, table, limit, progress)
    if again is not None and not as_json and again.line():
        click.echo(again.line(), err=True)
    with progress:
        try:
            for letter in letters:
                if limit is not None and tally["selected"] >= limit:
                    break
                tally["selected"] += 1
                [letter] = counted(client, name, [letter])
                dest, why = target_of(letter, target, table)
                why = why or refusal(letter, max_redrives, force)
                if why:
                    tally["refused"] += 1
                    refused.append({"id": letter.entry_id, "why": why})
                    progress.advance(1)
                    continue
                pending.append((letter, dest, redrive_fields(letter, target), letter.redrives + 1))
                if len(pending) >= batch_size:
                    flush()
            flush()
        except KeyboardInterrupt:
            tally["interrupted"] = 1
    report("redrive", name, tally, refused, moved, as_json, dry_run, again)
    common.audit(
        "dlq_redriven",
        stream=name,
        dry_run=dry_run,
        redriven=tally["redriven"],
        refused=len(refused),
        already_gone=tally["gone"],
        to=target,
        reasons=list(chosen.reasons),
        would_fail_again=again.same.total() if again is not None else None,
        interrupted=bool(tally["interrupted"]),
    )
    if tally["interrupted"]:
        sys.exit(common.EXIT_INTERRUPTED)
    sys.exit(common.EXIT_FAILED if refused else common.EXIT_OK)


def apart(client: common.Client, stream: str, dest: str) -> bool:
    """Whether redriving to ``dest`` cannot be one script: a cluster, another slot."""
    return isinstance(client, RedisCluster) and slot_of(dest) != slot_of(stream)


def write_then_delete(
    client: common.Client,
    stream: str,
    letter: DeadLetter,
    dest: str,
    fields: list[bytes],
    counts: tuple[str, int],
) -> tuple[str, str]:
    """The script's steps as separate commands: XADD to ``dest``, record its count, then
    XDEL the dead letter.

    Nothing is lost (the dead letter goes only after its copy is written); a kill
    between the two leaves it in place, and a rerun writes it again.
    """
    if not common.xrange(client, stream, letter.entry_id, letter.entry_id, 1):
        return "gone", ""
    try:
        new_id = common.call(client, "XADD", dest, "*", *fields)
    except ResponseError as exc:  # WRONGTYPE...: nothing written, the dead letter stays
        return "error", str(exc)
    key, count = counts
    common.call(client, "HSET", key, dest.encode() + b"\0" + common.text(new_id).encode(), count)
    common.call(client, "HDEL", key, letter.count_field)
    common.call(client, "PEXPIRE", key, COUNTS_TTL_MS)
    common.call(client, "XDEL", stream, letter.entry_id)
    return "ok", common.text(new_id)
