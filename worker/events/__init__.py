"""Event and definition models: the contract with producers (JSON Schemas in schemas/)."""
