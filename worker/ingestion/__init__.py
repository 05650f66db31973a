"""From Kafka messages to one atomic Redis write per partition batch."""
