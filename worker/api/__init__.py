"""The read API (FastAPI): Mida-compatible results over HTTP, reading Redis only."""
