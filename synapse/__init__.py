"""Synapse: a Redis Streams event router."""

__version__ = "0.1.0"
