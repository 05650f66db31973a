"""The one way this project makes a Kafka producer: acknowledged by every in-sync replica,
idempotent.

acks=all makes a send wait until every in-sync replica has the record, so with
min.insync.replicas = RF - 1 (worker/ingestion/topics.py) an acknowledged record
survives the loss of one broker. Idempotence gives each batch a producer id and a
sequence number: a send retried after a lost acknowledgement (a leader election, a
dropped connection) is written once, and aiokafka retries such batches instead of
expiring them. aiokafka refuses idempotence with any acks but all.
"""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

DEFAULT_REQUEST_TIMEOUT_MS = 40000
"""aiokafka's own default: how long one produce request may wait for its acknowledgement."""


def new_producer(
    bootstrap_servers: str,
    *,
    linger_ms: int = 0,
    request_timeout_ms: int = DEFAULT_REQUEST_TIMEOUT_MS,
) -> AIOKafkaProducer:
    """A producer (not started) with acks=all and idempotence; the caller starts and stops it."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        request_timeout_ms=request_timeout_ms,
    )
