"""The ``synapse`` command group and its shared options."""

from __future__ import annotations

import click

from synapse import __version__
from synapse.cli.check import check


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="synapse")
def main() -> None:
    """Operate Synapse: check configs, dry-run routing, inspect streams and dead letters."""


main.add_command(check)
