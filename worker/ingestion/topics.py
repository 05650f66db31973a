"""Creates the topics of the design when they are missing, and checks co-partitioning."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from worker.config import Settings
from worker.errors import ConfigurationError

log = logging.getLogger(__name__)


def topic_specs(settings: Settings) -> list[NewTopic]:
    """Every topic with its partitions and cleanup policy."""
    replication = settings.replication_factor
    compacted = {"cleanup.policy": "compact"}
    # The conversion hold runs in publish time: LogAppendTime makes a record's timestamp
    # the broker's clock, the same for every producer (README, "hold").
    stamped = {"message.timestamp.type": settings.input_timestamp_type}
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
        NewTopic(settings.topic_winners, settings.partitions, replication),
        NewTopic(settings.topic_dead_letter, settings.partitions, replication),
    ]


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
        described = await admin.describe_topics(list(settings.input_topics))
    finally:
        await admin.close()
    counts = {item["topic"]: len(item["partitions"]) for item in described}
    if len(set(counts.values())) != 1:
        raise ConfigurationError(
            "The input topics must have the same partition count (co-partitioning by visitor_id), "
            f"but they have {counts}: recreate one of them to match."
        )
    return next(iter(counts.values()))
