"""Creates the topics of the design when they are missing, and checks co-partitioning."""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from worker.config import Settings, min_insync_replicas
from worker.errors import ConfigurationError

log = logging.getLogger(__name__)


def topic_specs(settings: Settings) -> list[NewTopic]:
    """Every topic with its partitions, replication and cleanup policy."""
    replication = settings.replication_factor
    durable = {"min.insync.replicas": str(min_insync_replicas(replication))}
    compacted = durable | {"cleanup.policy": "compact"}
    # The conversion hold runs in publish time: LogAppendTime makes a record's timestamp
    # the broker's clock, the same for every producer (README, "hold").
    stamped = durable | {"message.timestamp.type": settings.input_timestamp_type}
    return [
        NewTopic(
            settings.topic_assignments, settings.partitions, replication, topic_configs=stamped
        ),
        NewTopic(
            settings.topic_conversions, settings.partitions, replication, topic_configs=stamped
        ),
        # One partition: definitions are few, and one ordered log keeps every
        # worker's view of them in the same order.
        NewTopic(settings.topic_experiments, 1, replication, topic_configs=compacted),
        NewTopic(settings.topic_results, settings.partitions, replication, topic_configs=compacted),
        NewTopic(settings.topic_winners, settings.partitions, replication, topic_configs=durable),
        NewTopic(
            settings.topic_dead_letter, settings.partitions, replication, topic_configs=durable
        ),
    ]


DESCRIBE_WAIT_SECONDS = 30.0
"""How long a topic may go without partitions in the metadata before that is an error."""


async def _partition_counts(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, int]:
    """The partition count of each topic, waiting for topics the brokers do not know yet.

    In a cluster, the controller creates a topic and tells the brokers a moment later:
    the broker asked right after may describe it with no partitions, which would read
    as a partition count of 0.
    """
    deadline = time.monotonic() + DESCRIBE_WAIT_SECONDS
    while True:
        described = await admin.describe_topics(topics)
        counts = {item["topic"]: len(item["partitions"]) for item in described}
        unknown = [topic for topic in topics if not counts.get(topic)]
        if not unknown:
            return counts
        if time.monotonic() > deadline:
            raise ConfigurationError(
                f"Kafka still describes {', '.join(unknown)} without partitions "
                f"{DESCRIBE_WAIT_SECONDS:.0f} s after creating it: check the brokers' logs."
            )
        await asyncio.sleep(0.2)


async def ensure_topics(settings: Settings) -> int:
    """Create missing topics; return the (shared) partition count of the input topics."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in topic_specs(settings) if spec.name not in existing]
        if missing:
            await admin.create_topics(missing)
            log.info("created topics: %s", ", ".join(spec.name for spec in missing))
        counts = await _partition_counts(admin, list(settings.input_topics))
    finally:
        await admin.close()
    if len(set(counts.values())) != 1:
        raise ConfigurationError(
            "The input topics must have the same partition count (co-partitioning by visitor_id), "
            f"but they have {counts}: recreate one of them to match."
        )
    return next(iter(counts.values()))
