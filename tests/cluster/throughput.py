"""Quick throughput of 1 vs 2 router processes on a local 3-primary cluster (not a test).

    python -m tests.cluster.throughput [EVENTS]

Starts N routers in one group, then writes EVENTS events over 4 sources (spread
over the nodes) and times from the first write until every entry is acknowledged.
Fan-out 2 across slots (write-then-ack), and the same through one hash tag
(atomic Lua commit).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from redis.cluster import RedisCluster

from tests.cluster.localcluster import LocalCluster
from tests.conftest import write_table
from tests.support.router import RouterProcess

SPREAD = """
    version: 1
    router: {block_ms: 200, batch: 500}
    sources: [s0, s1, s2, s3]
    routes:
      - {name: all, match: "*", to: [out-a, out-b]}
"""
TAGGED = """
    version: 1
    router: {block_ms: 200, batch: 500}
    sources: ["{t0}:in", "{t1}:in", "{t2}:in", "{t3}:in"]
    routes:
      - {name: a0, match: {source: "{t0}:in"}, to: ["{t0}:a", "{t0}:b"]}
      - {name: a1, match: {source: "{t1}:in"}, to: ["{t1}:a", "{t1}:b"]}
      - {name: a2, match: {source: "{t2}:in"}, to: ["{t2}:a", "{t2}:b"]}
      - {name: a3, match: {source: "{t3}:in"}, to: ["{t3}:a", "{t3}:b"]}
"""
BODY = '{"model_id": "m-000001", "stage": "production", "metrics": {"accuracy": 0.93}}' * 3


def run(folder: Path, cl: LocalCluster, yaml: str, routers: int, events: int) -> float:
    cl.flush()
    rc = RedisCluster(host="127.0.0.1", port=cl.primary_nodes()[0].port)
    config = write_table(folder / f"cfg{routers}", yaml)
    sources = [s.strip('"') for s in yaml.split("sources: [")[1].split("]")[0].split(", ")]
    for source in sources:
        rc.xgroup_create(source, "synapse-router", "0", mkstream=True)
    procs = [
        RouterProcess(
            config, cl.url, consumer=f"bench{n}", log_path=folder / f"logs{routers}" / f"{n}.log"
        ).start()
        for n in range(routers)
    ]
    while not all(rc.exists(f"synapse:consumer:synapse-router:bench{n}") for n in range(routers)):
        time.sleep(0.05)
    started = time.monotonic()
    for source in sources:
        pipe = rc.pipeline()
        for i in range(events // len(sources)):
            pipe.xadd(source, {"type": "model.ready", "data": BODY, "n": str(i)})
        pipe.execute()
    try:
        while any(g["lag"] or g["pending"] for s in sources for g in rc.xinfo_groups(s)):
            time.sleep(0.05)
        elapsed = time.monotonic() - started
    finally:
        for p in procs:
            p.stop()
    rc.close()
    return events / elapsed


def main() -> None:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 40_000
    folder = Path(tempfile.mkdtemp(prefix="synapse-bench-"))
    cl = LocalCluster(folder / "cluster", primaries=3).start()
    try:
        for name, yaml in (("across slots", SPREAD), ("hash-tagged", TAGGED)):
            for routers in (1, 2):
                rate = run(folder, cl, yaml, routers, events)
                print(f"{name:>13}: {routers} router(s): {rate:,.0f} events/s (load + route)")
    finally:
        cl.stop()


if __name__ == "__main__":
    main()
