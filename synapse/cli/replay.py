"""``synapse replay``: copy a stream's history to another stream, with provenance.

Each copy carries ``synapse-replay-of`` (the source id) and ``synapse-replay-source``.
Safe to rerun: every page of copies is written by one Lua script together with a
checkpoint (``synapse:replay:{<dest>}:<source>|<dest>|<filter hash>``: the last source
id considered), so a replay killed at any instant, rerun, copies each entry exactly
once. ``--restart`` forgets the checkpoint (to replay the same range again on
purpose). Checkpoints expire after 30 days.

The checkpoint carries the destination's hash tag (its ``{tag}``, else its whole
name), so on Redis Cluster it lives in the destination's slot and the script stays
atomic. A checkpoint written before the tag (``synapse:replay:<source>|...``) is still
read once, so an interrupted replay resumes across the upgrade.
"""

from __future__ import annotations

import hashlib
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click
from redis.cluster import RedisCluster

from synapse import keys
from synapse.cli import common
from synapse.cli.deadletter import store_kind
from synapse.cli.progress import Progress
from synapse.cli.replayfilter import compile_filter, copy_of, matches
from synapse.errors import UsageError
from synapse.events import Limits
from synapse.matching import compile_glob
from synapse.plan import limits_of
from synapse.slots import slot_of

CHECKPOINT_TTL_MS = 30 * 86_400_000
PAGE = 200

# KEYS[1]: destination, KEYS[2]: checkpoint hash.
# ARGV: count, last source id considered, checkpoint TTL ms, then per copy: n, fields...
REPLAY_LUA = """
local i = 4
local ids = {}
for e = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[i])
  local f = {}
  for k = 1, n do f[k] = ARGV[i + k] end
  i = i + 1 + n
  ids[e] = redis.call('XADD', KEYS[1], '*', unpack(f))
end
redis.call('HSET', KEYS[2], 'last', ARGV[2])
redis.call('HINCRBY', KEYS[2], 'copied', tonumber(ARGV[1]))
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return ids
"""


def checkpoint_key(source: str, dest: str, type_glob: str | None, where: str | None) -> str:
    """The checkpoint's key, in ``dest``'s hash slot (unless ``dest`` has stray braces)."""
    tag = hashed_part(dest)
    return f"{keys.REPLAY_PREFIX}{{{tag}}}:{legacy_key(source, dest, type_glob, where)}"


def legacy_key(source: str, dest: str, type_glob: str | None, where: str | None) -> str:
    """The key before the hash tag (the part after the prefix): read to resume an older run."""
    digest = hashlib.sha256(f"{type_glob or ''}\0{where or ''}".encode()).hexdigest()[:12]
    return f"{source}|{dest}|{digest}"


def hashed_part(key: str) -> str:
    """The part of ``key`` Redis Cluster hashes: its first ``{tag}``, else all of it."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1 : end] if 0 <= start < end - 1 else key


@click.command()
@common.config_option
@common.connection_options
@common.json_option
@common.debug_option
@click.argument("source")
@click.option("--to", "dest", required=True, help="Destination stream.")
@click.option("--since", help="From this time or id (ISO 8601, -2h, id); default: the start.")
@click.option("--until", help="Up to this time or id; default: the last entry now.")
@click.option("--type", "type_glob", help="Only events whose type matches this glob.")
@click.option("--where", help="Only events where this filter holds: '{stage: production}'.")
@click.option("--rate", type=float, help="At most N entries per second.")
@click.option("--limit", type=int, help="Copy at most N entries.")
@click.option("--dry-run", is_flag=True, help="Count what would be copied; write nothing.")
@click.option("--restart", is_flag=True, help="Ignore the checkpoint of an earlier run.")
def replay(
    config_path: Path,
    as_json: bool,
    source: str,
    dest: str,
    since: str | None,
    until: str | None,
    type_glob: str | None,
    where: str | None,
    rate: float | None,
    limit: int | None,
    dry_run: bool,
    restart: bool,
) -> None:
    """Copy SOURCE's entries to DEST with provenance; resumable and safe to rerun.

    On Kafka (--url kafka://...): topics; --since/--until take a time or a record id
    <partition>-<offset> (bounding that partition); keys are kept; a rerun resumes from
    the checkpoint in synapse.marks (at least once: a killed page may be copied twice).

    \b
    Examples:
      synapse replay ingress --to debug --since -30m --type 'model.*'
      synapse replay ingress --to debug --since -1h --where '{stage: production}' --restart
      synapse --url kafka://localhost:9092 replay ingress --to debug --since 0-1200
    """
    if source == dest:
        raise UsageError("--to must differ from SOURCE")
    wanted_type = compile_glob(type_glob) if type_glob else None
    filt = compile_filter(where)
    table = common.table_or_none(config_path, store_kind())
    limits = limits_of(table) if table else Limits()
    # Provenance on a stream the table consumes was set by producers, not by the router.
    trusted = table is not None and not any(test(source) for test in table.source_globs)
    if store_kind() == "kafka":
        from synapse.cli.kafkareplay import run_on_kafka

        def kafka_matches(fields: list[bytes]) -> bool:
            return matches(fields, limits, wanted_type, filt)

        def kafka_copy(fields: list[bytes], rid: bytes) -> list[bytes]:
            return copy_of(fields, source, rid, trusted)

        run_on_kafka(
            source,
            dest,
            (since, until),
            (type_glob, where),
            table,
            kafka_matches,
            kafka_copy,
            rate=rate,
            limit=limit,
            dry_run=dry_run,
            restart=restart,
            as_json=as_json,
        )
    client = common.connect()
    if client.type(source) != b"stream":
        raise common.Failure(f"no stream {source!r}")
    start = common.parse_when(since) if since else "-"
    end = common.parse_when(until) if until else (common.last_id(client, source) or "0-0")
    ckpt = checkpoint_key(source, dest, type_glob, where)
    if isinstance(client, RedisCluster) and slot_of(ckpt) != slot_of(dest):
        raise UsageError(
            f"--to {dest!r}: braces that are not a hash tag leave no key in its cluster "
            "slot for the checkpoint; rename the destination"
        )
    legacy = keys.REPLAY_PREFIX + legacy_key(source, dest, type_glob, where)
    if restart and not dry_run:
        client.delete(ckpt)
        client.delete(legacy)
    resumed = None
    if not restart:
        resumed = common.text(client.hget(ckpt, "last") or client.hget(legacy, "last")) or None
    if resumed and (start == "-" or common.id_key(resumed) >= common.id_key(start)):
        start = common.next_id(resumed)
    else:
        resumed = None
    script = client.register_script(REPLAY_LUA)
    page = max(1, min(PAGE, int(rate) // 10)) if rate else PAGE
    pacer = common.Pacer(rate)
    tally: Counter[str] = Counter()
    first = last = ""
    progress = Progress("replaying", as_json)
    if progress.shown:  # the entries still to scan: after a resume, inside --since/--until
        progress.total = common.count_range(client, source, start, end)
        if limit is not None and not (wanted_type or filt):
            progress.total = min(progress.total, limit)
    with progress:
        try:
            while limit is None or tally["copied"] < limit:
                entries = common.xrange(client, source, start, end, page)
                if not entries:
                    break
                copies: list[list[bytes]] = []
                considered: bytes | None = None
                scanned_before = tally["scanned"]
                for entry_id, fields in entries:
                    if limit is not None and tally["copied"] + len(copies) >= limit:
                        break
                    considered = entry_id
                    tally["scanned"] += 1
                    if not matches(fields, limits, wanted_type, filt):
                        tally["skipped"] += 1
                        continue
                    copies.append(copy_of(fields, source, entry_id, trusted))
                    first = first or common.text(entry_id)
                    last = common.text(entry_id)
                if considered is None:
                    break
                if not dry_run:
                    argv: list[Any] = [len(copies), considered, CHECKPOINT_TTL_MS]
                    for copy in copies:
                        argv += [len(copy), *copy]
                    script(keys=[dest, ckpt], args=argv)
                tally["copied"] += len(copies)
                progress.advance(tally["scanned"] - scanned_before)
                pacer.wait(max(1, len(copies)))
                start = common.next_id(considered)
                if len(entries) < page:
                    break
        except KeyboardInterrupt:
            tally["interrupted"] = 1
    report(source, dest, tally, resumed, first, last, ckpt, dry_run, as_json)
    common.audit(
        "replay_done",
        source=source,
        to=dest,
        dry_run=dry_run,
        copied=0 if dry_run else tally["copied"],
        skipped=tally["skipped"],
        first_id=first or None,
        last_id=last or None,
        resumed_after=resumed,
        interrupted=bool(tally["interrupted"]),
    )
    sys.exit(common.EXIT_INTERRUPTED if tally["interrupted"] else common.EXIT_OK)


def report(
    source: str,
    dest: str,
    tally: Counter[str],
    resumed: str | None,
    first: str,
    last: str,
    ckpt: str,
    dry_run: bool,
    as_json: bool,
) -> None:
    if as_json:
        common.emit_json(
            {
                "source": source,
                "to": dest,
                "dry_run": dry_run,
                "copied": 0 if dry_run else tally["copied"],
                "would_copy": tally["copied"] if dry_run else 0,
                "scanned": tally["scanned"],
                "skipped": tally["skipped"],
                "first_id": first or None,
                "last_id": last or None,
                "resumed_after": resumed,
                "checkpoint": ckpt,
                "interrupted": bool(tally["interrupted"]),
            }
        )
        return
    verb = "would copy" if dry_run else "copied"
    parts = [f"{verb} {tally['copied']}", f"skipped {tally['skipped']} (filter)"]
    if resumed:
        parts.append(f"resumed after {resumed} (--restart to replay from the start)")
    if tally["interrupted"]:
        parts.append("interrupted: rerun to continue (nothing lost, nothing doubled)")
    click.echo(f"replay {source} -> {dest}: {', '.join(parts)}")
