"""Event, definition and dead-letter models: the contract with producers and consumers
(JSON Schemas in schemas/)."""
