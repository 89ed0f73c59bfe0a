"""Alert rules and the Grafana dashboard: promtool-checked, and every metric they use exists."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import yaml

from tests.conftest import ROOT, wait_sync, write_table
from tests.ops.conftest import need_tool
from tests.ops.test_reload import EV_SCHEMA, TABLE_A, all_acked
from tests.support.router import RouterProcess

RULES = ROOT / "config" / "prometheus" / "synapse-alerts.yml"
RULE_TESTS = ROOT / "config" / "prometheus" / "synapse-alerts.test.yml"
DASHBOARD = ROOT / "config" / "grafana" / "synapse-dashboard.json"
ALERTS = {
    "SynapseRouterDown",
    "SynapseRouterAbsent",
    "SynapseRouterNotReady",
    "SynapseRedisErrors",
    "SynapseDeadLettersRising",
    "SynapseDeadLettersTrickling",
    "SynapseCriticalErrorRouted",
    "SynapseConsumerGroupLagging",
    "SynapseSourceLagGrowing",
    "SynapsePendingGrowing",
    "SynapseRoutingStalled",
    "SynapseConfigReloadFailing",
    "SynapseEventLatencyHigh",
}
METRIC = re.compile(r"\bsynapse_[a-z0-9_]+")


def rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    return exprs


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=RULES.parent)


def test_alert_rules_pass_promtool_check() -> None:
    """`promtool check rules` accepts the alert file, and it holds the documented alerts."""
    done = run(need_tool("promtool"), "check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {r["alert"] for r in rules()} == ALERTS
    assert all(r["labels"]["severity"] in ("warning", "critical") for r in rules())


def test_alert_rules_unit_tests_pass() -> None:
    """`promtool test rules`: each alert fires on its bad series and not on healthy ones."""
    done = run(need_tool("promtool"), "test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested == ALERTS


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every dashboard query parses (checked by promtool as recording rules) and covers the set."""
    exprs = dashboard_exprs()
    plain = [
        e.replace("$__rate_interval", "5m")
        .replace("$job", ".*")
        .replace("$instance", ".*")
        .replace("$group", "g")
        for e in exprs
    ]
    as_rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(plain)],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(as_rules))
    done = run(need_tool("promtool"), "check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    joined = "\n".join(exprs)
    for needed in (
        "sum by (route) (rate(synapse_events_routed_total",
        "sum by (reason) (rate(synapse_events_dead_lettered_total",
        "histogram_quantile(0.99, sum by (le) (rate(synapse_event_latency_seconds_bucket",
        "max by (source) (synapse_source_lag",
        "max by (source) (synapse_source_pending",
        "synapse_config_reloads_total",
        "max by (stream) (synapse_consumer_group_lag",
        "max by (stream) (synapse_consumer_group_pending",
    ):
        assert needed in joined, needed


def test_dashboard_repeats_a_panel_per_consumer_group_and_has_no_unused_input() -> None:
    """One panel per consumer group (repeated over $group); the data source is the
    dashboard's own variable, so no unused DS_PROMETHEUS import input is left."""
    text = DASHBOARD.read_text()
    dash = json.loads(text)
    assert "__inputs" not in dash and "DS_PROMETHEUS" not in text
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert "synapse_consumer_group_lag" in variables["group"]["definition"]
    [panel] = [p for p in dash["panels"] if p.get("repeat") == "group"]
    assert all('group="$group"' in t["expr"] for t in panel["targets"])
    assert all(
        p["datasource"]["uid"] == "${datasource}" for p in dash["panels"] if "datasource" in p
    )


def exported_names(text: str) -> set[str]:
    """Metric names a scrape exports: samples, declared families, histogram series."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_every_metric_in_rules_and_dashboard_is_exported(
    tmp_path: Path, spawn: Callable[..., RouterProcess], r: redis.Redis
) -> None:
    """Each synapse_* name in the alerts and the dashboard is served by a running router."""
    config = write_table(tmp_path / "cfg", TABLE_A, {"ev.json": EV_SCHEMA})
    router = spawn(config)
    router.wait_ready()
    r.xadd("ingress", {"type": "ev.ok", "data": json.dumps({"n": 1})})
    r.xadd("ingress", {"type": "ev.bad", "data": json.dumps({"n": "x"})})
    wait_sync(lambda: all_acked(r), what="both handled")
    used = set()
    for rule in rules():
        used |= set(METRIC.findall(rule["expr"]))
    for expr in dashboard_exprs():
        used |= set(METRIC.findall(expr))
    assert len(used) >= 15
    status, body = router.get("/metrics")
    assert status == 200
    missing = used - exported_names(body)
    assert not missing, f"used but not exported: {sorted(missing)}"
    assert router.stop() == 0
