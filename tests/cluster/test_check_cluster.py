"""``synapse check --cluster``: which routes stay atomic on Redis Cluster, computed from slots."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from synapse.cli.main import main
from synapse.slots import pattern_slot, slot_of
from tests.conftest import write_table

TABLE = """
    version: 1
    router: {dead_letter: "{orders}:dlq"}
    sources: ["{orders}:in", "{orders}:in:*", ingress, "ingress:*"]
    routes:
      - name: orders
        match: {type: "order.*", source: "{orders}:*"}
        to: ["{orders}:billing", "{orders}:shipping"]
      - name: models
        match: "model.*"
        to: [model-events]
"""


def test_pattern_slots_follow_hash_tags() -> None:
    """A glob's slot is known only when a hash tag closes before any glob character."""
    assert pattern_slot("{orders}:in:*") == slot_of("{orders}") == slot_of("{orders}:x")
    assert pattern_slot("ingress") == slot_of("ingress")
    assert pattern_slot("ingress:*") is None
    assert pattern_slot("{ord*}:x") is None
    assert pattern_slot("{}:*") is None


def test_check_cluster_lists_atomic_and_at_least_once_routes(tmp_path: Path) -> None:
    """Hash-tagged routes are reported atomic; the others at-least-once, with the slots."""
    config = write_table(tmp_path, TABLE)
    result = CliRunner().invoke(main, ["check", "--config", str(config), "--cluster", "--json"])
    assert result.exit_code == 0, result.output
    verdicts = {(v["kind"], v["name"]): v for v in json.loads(result.output)["cluster"]}
    assert verdicts[("route", "orders")]["atomic"] is True
    assert verdicts[("route", "models")]["atomic"] is False
    assert "glob with no hash tag" in verdicts[("route", "models")]["detail"]
    assert verdicts[("dead_letter", "{orders}:in")]["atomic"] is True
    assert verdicts[("dead_letter", "ingress")]["atomic"] is False
    text = CliRunner().invoke(main, ["check", "--config", str(config), "--cluster"]).output
    assert "route orders: atomic" in text
    assert "route models: at-least-once" in text
    plain = CliRunner().invoke(main, ["check", "--config", str(config), "--json"]).output
    assert "cluster" not in json.loads(plain)  # only on request
