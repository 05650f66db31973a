"""API keys of the read API: one project each, stored only as SHA-256 hashes.

A key is 32 random bytes (URL-safe base64 with a recognisable prefix), so a fast
unsalted hash is enough: nobody can search a 256-bit space, and a lookup by hash
needs no per-key salt. Every key lives in one Redis hash (field = hash of the key,
value = its record), which keeps create, lookup and revoke single atomic commands
and the layout valid on Redis Cluster.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import orjson
from redis.asyncio import Redis

from worker.store import keys

KEY_PREFIX = "abk_"
KEY_BYTES = 32
MAX_KEY_LENGTH = 200
"""Longer presented keys are rejected without hashing: no real key is that long."""


@dataclass(frozen=True)
class ApiKeyRecord:
    """What is stored about a key: never the key itself."""

    id: str
    project_key: str
    created_at: str


def key_hash(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


async def create_key(redis: Redis, prefix: str, project_key: str) -> tuple[str, ApiKeyRecord]:
    """A new key for the project and its record; the key is returned once, never stored."""
    key = KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)
    record = ApiKeyRecord(
        id=secrets.token_hex(6),
        project_key=project_key,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    await redis.hset(keys.api_keys_key(prefix), key_hash(key), orjson.dumps(asdict(record)))
    return key, record


async def find_key(redis: Redis, prefix: str, key: str) -> ApiKeyRecord | None:
    """The record of a presented key, or None when it is unknown or revoked."""
    if not key or len(key) > MAX_KEY_LENGTH:
        return None
    raw = await redis.hget(keys.api_keys_key(prefix), key_hash(key))
    return None if raw is None else ApiKeyRecord(**orjson.loads(raw))


async def list_keys(redis: Redis, prefix: str, project_key: str) -> list[ApiKeyRecord]:
    """The project's keys (ids and creation times), oldest first."""
    records = [
        ApiKeyRecord(**orjson.loads(raw)) for raw in await redis.hvals(keys.api_keys_key(prefix))
    ]
    mine = [record for record in records if record.project_key == project_key]
    return sorted(mine, key=lambda record: (record.created_at, record.id))


async def revoke_key(redis: Redis, prefix: str, key_or_id: str) -> ApiKeyRecord | None:
    """Delete a key given the key itself or its id; None when nothing matched."""
    stored = await redis.hgetall(keys.api_keys_key(prefix))
    wanted = key_hash(key_or_id).encode()
    for digest, raw in stored.items():
        record = ApiKeyRecord(**orjson.loads(raw))
        if digest == wanted or record.id == key_or_id:
            await redis.hdel(keys.api_keys_key(prefix), digest)
            return record
    return None
