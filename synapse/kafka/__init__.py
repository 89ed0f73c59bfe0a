"""The Kafka backend's pure pieces: URLs, topic names, record <-> entry (docs/kafka.md).

Nothing here imports a Kafka client; the backend that will drive confluent-kafka
(issue 14's remaining work) builds on these.
"""
