"""What every ``synapse`` command shares, in one import: ``from synapse.cli import common``.

Each concept lives in a module of its own; this one only gathers their names so a
command reads ``common.text`` / ``common.connect`` / ``common.Failure``:

- ``options.py``: ``--url``/``--state-dir``, ``--config``, ``--json``, ``--debug``;
- ``connection.py``: where the store is (flag > env > state file), the Redis client;
- ``errors.py``: ``Failure``, exit codes, one line per error (``SynapseGroup``);
- ``output.py``: JSON, tables, plurals, the audit line, pacing;
- ``times.py``: ``--since``/``--until`` and entry ids;
- ``redisread.py``: Redis stream ranges and counts;
- ``tables.py``: the routing table, a readable Failure when broken.

The store seam the Kafka-capable commands use is ``store.py`` (docs/kafka.md "The CLI").
"""

from __future__ import annotations

from synapse.cli.connection import Client as Client
from synapse.cli.connection import connect as connect
from synapse.cli.connection import env_url as env_url
from synapse.cli.connection import redis_url as redis_url
from synapse.cli.connection import resolved_url as resolved_url
from synapse.cli.connection import store_url as store_url
from synapse.cli.errors import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from synapse.cli.errors import EXIT_OK as EXIT_OK
from synapse.cli.errors import Failure as Failure
from synapse.cli.errors import SynapseGroup as SynapseGroup
from synapse.cli.errors import describe as describe
from synapse.cli.options import config_option as config_option
from synapse.cli.options import connection_options as connection_options
from synapse.cli.options import debug_option as debug_option
from synapse.cli.options import json_option as json_option
from synapse.cli.output import Pacer as Pacer
from synapse.cli.output import audit as audit
from synapse.cli.output import emit_json as emit_json
from synapse.cli.output import interactive as interactive
from synapse.cli.output import plural as plural
from synapse.cli.output import table_rows as table_rows
from synapse.cli.output import text as text
from synapse.cli.redisread import COUNT_LUA as COUNT_LUA
from synapse.cli.redisread import Entry as Entry
from synapse.cli.redisread import call as call
from synapse.cli.redisread import count_range as count_range
from synapse.cli.redisread import last_id as last_id
from synapse.cli.redisread import scan_range as scan_range
from synapse.cli.redisread import xrange as xrange
from synapse.cli.tables import table as table
from synapse.cli.tables import table_or_none as table_or_none
from synapse.cli.times import entry_id as entry_id
from synapse.cli.times import id_key as id_key
from synapse.cli.times import id_time as id_time
from synapse.cli.times import next_id as next_id
from synapse.cli.times import parse_when as parse_when
from synapse.errors import EXIT_FAILED as EXIT_FAILED
