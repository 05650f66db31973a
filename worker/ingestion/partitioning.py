"""Kafka's default partitioner, which co-partitioning of the input topics relies on."""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def partition_for(visitor_id: str, partitions: int) -> int:
    """The partition Java, aiokafka and kafkajs producers pick for this key."""
    return (murmur2(visitor_id.encode()) & 0x7FFFFFFF) % partitions
