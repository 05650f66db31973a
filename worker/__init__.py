"""ab-results-worker: exact, effectively-once A/B-test results from Kafka events."""
