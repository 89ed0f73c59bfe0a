"""Reading and committing through a ``Backend`` in tests: the store-neutral steps the
backend tests (``tests/cluster/test_backend_contract.py``, ``tests/kafka/test_backend_kafka.py``)
share."""

from __future__ import annotations

from synapse.backend import Backend, Batch
from synapse.config import RoutingTable
from synapse.plan import Planner
from tests.support.polling import wait_for

#: The backend tests' table (``.format(group=, source=, out=)``): every type to ``out``.
TABLE = """
    version: 1
    router: {{group: {group}, block_ms: 100, claim_idle_ms: 300, batch: 10, max_deliveries: 5}}
    sources: ["{source}"]
    routes:
      - name: all
        match: "*"
        to: ["{out}"]
"""


async def read_n(backend: Backend, table: RoutingTable, source: str, n: int) -> list[Batch]:
    """Read ``source`` until ``n`` entries came back (a Kafka fetch may take more than one
    BLOCK)."""
    found: list[Batch] = []

    async def enough() -> bool:
        found.extend(await backend.read(table.settings, [source], 100) or [])
        return sum(len(b.entries) for b in found) >= n

    await wait_for(enough, 20, f"{n} entries read")
    return found


async def commit_all(backend: Backend, table: RoutingTable, batch: Batch) -> None:
    """Plan ``batch`` by ``table`` and commit it; every entry committed."""
    plan = Planner(table).plan_batch(batch.source, batch.entries, 0, batch.deliveries)
    result = await backend.commit(plan, table.settings.group)
    assert not result.failed and not result.skipped


def numbered(n: int) -> list[bytes]:
    """``n`` record values ``{"n": i}``."""
    return [b'{"n": %d}' % i for i in range(n)]
