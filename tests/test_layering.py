"""The pure core imports no network or event-loop code: a test fails the day one does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import synapse
from tests.support.imports import imported

#: Modules that decide without I/O (files excepted: the loader reads the config): the
#: routing decision, the plan, the table and its schemas, the event layout, the retry
#: policy, the error names. Anything they import must be in this set too.
PURE = (
    "synapse.routing",
    "synapse.plan",
    "synapse.giveup",
    "synapse.config",
    "synapse.shape",
    "synapse.schemas",
    "synapse.events",
    "synapse.retry",
    "synapse.errors",
    "synapse.backoff",
    "synapse.boundedcache",
    "synapse.keys",
    "synapse.matching",
    "synapse.regexes",
    "synapse.refs",
    "synapse.loops",
    "synapse.yamlfile",
    "synapse.files",
    # the backend seam's own vocabulary and the loop's timers, and the slot analysis
    "synapse.backend",
    "synapse.chores",
    "synapse.slots",
    "synapse.slotcheck",
    # the Kafka backend's pure pieces (URL, topic names, record <-> entry)
    "synapse.kafka",
    "synapse.kafka.url",
    "synapse.kafka.names",
    "synapse.kafka.records",
    "synapse.settings",
)
#: Third-party and standard packages the pure core must never load.
FORBIDDEN_PACKAGES = (
    "redis",
    "asyncio",
    "hiredis",
    "prometheus_client",
    "confluent_kafka",
    "aiokafka",
)
#: What a pure module's own source may not import (jsonschema, a dependency, loads
#: ``socket`` for its own reasons: that is checked here, not by the package list).
FORBIDDEN_IN_SOURCE = ("socket", "asyncio", "redis", "selectors", "ssl", "http", "subprocess")


def test_the_pure_core_loads_no_redis_asyncio_or_io_module() -> None:
    """Importing every pure module (fresh interpreter) loads no redis, asyncio or synapse I/O."""
    code = (
        "import json, sys\n"
        f"for m in {PURE!r}: __import__(m)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(done.stdout)
    bad = [m for m in loaded if m.split(".")[0] in FORBIDDEN_PACKAGES]
    assert bad == [], f"the pure core loads {bad[:5]}"
    ours = {m for m in loaded if m.startswith("synapse.")}
    assert ours <= set(PURE), f"the pure core loads {sorted(ours - set(PURE))}"


@pytest.mark.parametrize("module", PURE)
def test_a_pure_module_imports_no_network_code_itself(module: str) -> None:
    """A pure module's own imports name no socket, event loop, Redis or subprocess module."""
    path = Path(synapse.__file__).parent.joinpath(*module.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    names = imported(path, relative=False)
    bad = [n for n in names if n.split(".")[0] in FORBIDDEN_IN_SOURCE]
    assert bad == [], f"{module} imports {bad}"


def test_the_check_catches_an_io_import() -> None:
    """The sys.modules check is not vacuous: importing an I/O module is seen."""
    code = "import json, sys, synapse.commit; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(done.stdout)
    assert "redis" in loaded and "synapse.wire" in loaded
