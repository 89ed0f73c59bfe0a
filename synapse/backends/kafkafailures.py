"""What kind of failure a confluent-kafka error is (``errors.Failure``), for the loop's
``retry.verdict``: the Kafka counterpart of ``synapse/failures.py``."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from synapse import log as logging
from synapse.errors import Failure

#: The broker or the network cannot be reached (back off, not ready).
CONNECTION_CODES = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._RESOLVE,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.BROKER_NOT_AVAILABLE,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    }
)
#: The cluster as a whole refuses writes for now (back off, not ready).
OUTAGE_CODES = frozenset(
    {
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.KAFKA_STORAGE_ERROR,
        KafkaError.THROTTLING_QUOTA_EXCEEDED,
    }
)
#: An ACL refuses a topic, the group or the cluster.
PERMISSION_CODES = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    }
)


def classify_kafka(exc: BaseException) -> Failure:
    """The kind of ``exc``; ``INTERNAL`` when it is neither Kafka's nor the network's."""
    if isinstance(exc, KafkaException):
        error = exc.args[0] if exc.args else None
        code = error.code() if isinstance(error, KafkaError) else None
        if code in CONNECTION_CODES:
            return Failure.CONNECTION
        if code in OUTAGE_CODES:
            return Failure.OUTAGE
        if code in PERMISSION_CODES:
            return Failure.NO_PERMISSION
        return Failure.RESPONSE
    if isinstance(exc, ConnectionError | TimeoutError):
        return Failure.CONNECTION
    return Failure.INTERNAL


#: librdkafka's own log level for every client (syslog levels): critical only. Its errors
#: reach ``BrokerWatch`` instead; left at 6 it prints a "Connect ... failed" line per client
#: and reconnect attempt while a broker is away (hundreds a minute, none structured).
CLIENT_LOG_LEVEL = 2


class BrokerWatch:
    """The ``error_cb`` of the backend's clients: notes when librdkafka finds every broker
    down (``_ALL_BROKERS_DOWN``), which it otherwise only logs while it reconnects. Any
    other kind of error that is not a connection's is logged once per kind
    (``kafka_client_error``) until a broker answers again."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self._pending: KafkaError | None = None  # not yet raised by the loop
        self._went = False  # since the last ``answered``
        self._logged: set[int] = set()  # codes logged since the last ``answered``

    def __call__(self, error: KafkaError) -> None:
        code = error.code()
        if code == KafkaError._ALL_BROKERS_DOWN:
            self._pending = error
            self._went = True
        elif code not in CONNECTION_CODES and code not in self._logged:
            self._logged.add(code)
            self.log.warning("kafka_client_error", error=error.str(), fatal=error.fatal())

    def raise_if_down(self) -> None:
        """Raise the outage once (a CONNECTION failure for ``classify_kafka``)."""
        error, self._pending = self._pending, None
        if error is not None:
            raise KafkaException(error)

    def answered(self) -> bool:
        """A broker answers again: whether every broker went away since the last call.
        An outage reported late (served after the answer) is stale: forgotten."""
        went, self._went, self._pending = self._went, False, None
        self._logged.clear()
        return went
