"""`synapse dlq redrive` of a handler's dead letter: to that service's retry stream only."""

from __future__ import annotations

import redis

from tests.cli.conftest import Invoke, as_json


def handler_letter(r: redis.Redis, consumer: bytes) -> bytes:
    """A dead letter as synapse.client writes it for a handler that gave up."""
    fields = {
        b"type": b"job.run", b"data": b'{"n": 7}', b"id": b"e7",
        b"synapse-reason": b"handler_error", b"synapse-error": b"RuntimeError: no",
        b"synapse-source": b"jobs", b"synapse-id": b"5-0", b"synapse-deliveries": b"5",
        b"synapse-config": b"", b"synapse-time": b"2026-01-01T00:00:00.000Z",
        b"synapse-consumer": consumer,
    }  # fmt: skip
    entry_id: bytes = r.xadd("synapse:dlq", fields)
    return entry_id


def test_redrive_sends_a_handler_dead_letter_to_the_retry_stream(
    cli: Invoke, r: redis.Redis
) -> None:
    """The dead letter goes to synapse:retry:<service>, original fields only; jobs untouched."""
    handler_letter(r, b"runtime")
    dry = as_json(cli("dlq", "redrive", "--dry-run", "--json"))
    assert [e["to"] for e in dry["entries"]] == ["synapse:retry:runtime"]
    listed = as_json(cli("dlq", "list", "--json"))
    assert listed["entries"][0]["consumer"] == "runtime"
    done = cli("dlq", "redrive", "--json")
    assert done.exit_code == 0 and as_json(done)["redriven"] == 1
    [(_, fields)] = r.xrange("synapse:retry:runtime")
    assert fields == {b"type": b"job.run", b"data": b'{"n": 7}', b"id": b"e7"}
    assert r.exists("jobs") == 0 and r.xlen("synapse:dlq") == 0


def test_redrive_refuses_a_consumer_that_is_no_service_name(cli: Invoke, r: redis.Redis) -> None:
    """A synapse-consumer with spaces or globs is refused (exit 1), nothing written."""
    handler_letter(r, b"run time*")
    result = cli("dlq", "redrive", "--json")
    assert result.exit_code == 1
    [refused] = as_json(result)["refused"]
    assert "is not a service name" in refused["why"]
    assert r.xlen("synapse:dlq") == 1 and not r.keys("synapse:retry:*")
