"""The ``synapse`` command group: every ops command, with shared options.

Exit codes: 0 ok, 1 findings or failure, 2 usage, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import click

from synapse import __version__
from synapse.cli import common
from synapse.cli.check import check
from synapse.cli.dlq import dlq
from synapse.cli.publish import publish
from synapse.cli.replay import replay
from synapse.cli.route import route
from synapse.cli.routetests import test_cmd
from synapse.cli.services import services
from synapse.cli.streams import streams
from synapse.cli.tail import tail
from synapse.cli.topology import topology


@click.group(cls=common.SynapseGroup, context_settings={"help_option_names": ["-h", "--help"]})
@common.connection_options
@common.debug_option
@click.version_option(__version__, prog_name="synapse")
def main() -> None:
    """Operate Synapse: check configs, dry-run routing, inspect streams and dead letters.

    Store: --url / SYNAPSE_URL (aliases --redis-url / SYNAPSE_REDIS_URL), else the
    URL the router wrote to <state-dir>/redis.url; a kafka://host:9092 URL works for
    streams, tail, publish, dlq and replay (docs/kafka.md). Exit codes: 0 ok, 1 findings
    or failure, 2 usage, 130 interrupted. Every command takes -h for its own help and
    examples.

    \b
    Examples:
      synapse check --strict
      synapse --url redis://localhost:6379/0 streams
      synapse --url kafka://localhost:9092 dlq list
      synapse dlq list --since -2h
    """


for command in (check, route, test_cmd, publish, streams, tail, dlq, replay, services, topology):
    main.add_command(command)
