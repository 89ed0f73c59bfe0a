"""The ``synapse`` ops CLI: one module per command group."""

from synapse.cli.main import main

__all__ = ["main"]
