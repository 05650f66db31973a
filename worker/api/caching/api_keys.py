"""API-key lookups, remembered for a few seconds.

Every request presents a key; looking it up in Redis each time costs a round trip and
a hash per request on the hottest path. A key found is remembered for
``KEY_CACHE_SECONDS``: a revoked key therefore keeps working for at most that long
in each API process (the README says so). Unknown keys are never remembered, so a key
created a moment ago works at once.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from worker.store.api_keys import ApiKeyRecord, find_key
from worker.store.connection import Redis

KEY_CACHE_SECONDS = 5.0
KEY_CACHE_ENTRIES = 10_000


class KeyCache:
    """The record (project and scopes) of each presented key, from Redis or from the
    last few seconds."""

    def __init__(self, redis: Redis, prefix: str, seconds: float = KEY_CACHE_SECONDS) -> None:
        self._redis = redis
        self._prefix = prefix
        self._seconds = seconds
        self._found: OrderedDict[str, tuple[float, ApiKeyRecord]] = OrderedDict()

    def cached_record(self, key: str) -> ApiKeyRecord | None:
        """The record of ``key`` if it was found less than the TTL ago (no Redis)."""
        found = self._found.get(key)
        if found is None or time.monotonic() - found[0] >= self._seconds:
            return None
        return found[1]

    async def record_of(self, key: str) -> ApiKeyRecord | None:
        """The record of ``key``, or None when it is unknown or revoked."""
        cached = self.cached_record(key)
        if cached is not None:
            return cached
        record = await find_key(self._redis, self._prefix, key)
        if record is None:
            self._found.pop(key, None)
            return None
        self._found[key] = (time.monotonic(), record)
        self._found.move_to_end(key)
        while len(self._found) > KEY_CACHE_ENTRIES:
            self._found.popitem(last=False)
        return record


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request presents, as FastAPI's ``HTTPBearer`` and ``APIKeyHeader``
    read it: ``Authorization: Bearer <key>`` first, else ``x-api-key``."""
    scheme, _, credentials = (authorization or "").partition(" ")
    credentials = credentials.strip()
    if authorization and scheme and credentials and scheme.lower() == "bearer":
        return credentials
    return x_api_key or None
