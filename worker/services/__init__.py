"""Local Kafka and Redis for machines without Docker: provisioned, started, stopped."""
