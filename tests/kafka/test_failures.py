"""What the backend's clients report through ``error_cb`` (``kafkafailures.BrokerWatch``):
every broker down is raised once by the loop; other errors are logged once per kind."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException
from structlog.testing import capture_logs

from synapse import log as logging
from synapse.backends.kafkafailures import BrokerWatch, classify_kafka
from synapse.errors import Failure


def test_every_broker_down_is_raised_once_as_a_connection_failure() -> None:
    """_ALL_BROKERS_DOWN: the next raise_if_down raises it (CONNECTION), the one after does
    not; answered() says the brokers went away, once."""
    watch = BrokerWatch(logging.get("test"))
    watch.raise_if_down()
    assert not watch.answered()
    watch(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    with pytest.raises(KafkaException) as raised:
        watch.raise_if_down()
    assert classify_kafka(raised.value) == Failure.CONNECTION
    watch.raise_if_down()
    assert watch.answered() and not watch.answered()


def test_an_outage_reported_after_a_broker_answered_is_forgotten() -> None:
    """answered() drops an outage not raised yet (served late, after the broker is back)."""
    watch = BrokerWatch(logging.get("test"))
    watch(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    assert watch.answered()
    watch.raise_if_down()  # nothing left to raise


def test_other_errors_are_logged_once_per_kind_and_connection_noise_not_at_all() -> None:
    """A non-connection error logs kafka_client_error once per code until a broker answers
    again; a lost connection (_TRANSPORT) is neither logged nor raised."""
    watch = BrokerWatch(logging.get("test"))
    with capture_logs() as logs:
        watch(KafkaError(KafkaError._TRANSPORT))
        for _ in range(3):
            watch(KafkaError(KafkaError.SASL_AUTHENTICATION_FAILED))
        watch.raise_if_down()
        watch.answered()
        watch(KafkaError(KafkaError.SASL_AUTHENTICATION_FAILED))
    lines = [line for line in logs if line["event"] == "kafka_client_error"]
    assert len(lines) == 2
    assert "Authentication" in lines[0]["error"] or "SASL" in lines[0]["error"]
