"""API keys of the HTTP API: one project and a set of scopes each, stored only as
SHA-256 hashes.

A key is 32 random bytes (URL-safe base64 with a recognisable prefix), so a fast
unsalted hash is enough: nobody can search a 256-bit space, and a lookup by hash
needs no per-key salt. Every key lives in one Redis hash (field = hash of the key,
value = its record), which keeps create, lookup and revoke single atomic commands
and the layout valid on Redis Cluster.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import orjson

from worker.store import keys
from worker.store.connection import Redis

EXPERIMENT_READ = "experiment:read"
EXPERIMENT_WRITE = "experiment:write"
FEATURE_FLAG_READ = "feature_flag:read"
SCOPES = (EXPERIMENT_READ, EXPERIMENT_WRITE, FEATURE_FLAG_READ)
"""What a key may be granted (PostHog's scope names): reads, definition writes and
share creation, flag listings."""
DEFAULT_SCOPES = (EXPERIMENT_READ,)
"""A new key's scopes unless others are asked for, and those of a key stored before
keys had scopes: such keys keep the read access they had."""

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
    scopes: tuple[str, ...] = DEFAULT_SCOPES

    def allows(self, scope: str) -> bool:
        """Whether the key was granted ``scope``."""
        return scope in self.scopes


def key_hash(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


async def create_key(
    redis: Redis, prefix: str, project_key: str, scopes: Sequence[str] = DEFAULT_SCOPES
) -> tuple[str, ApiKeyRecord]:
    """A new key for the project with ``scopes`` (each one of ``SCOPES``) and its record;
    the key is returned once, never stored."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(f"unknown or no scopes {unknown}; use {', '.join(SCOPES)}")
    key = KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)
    record = ApiKeyRecord(
        id=secrets.token_hex(6),
        project_key=project_key,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        scopes=tuple(scope for scope in SCOPES if scope in scopes),
    )
    await redis.hset(keys.api_keys_key(prefix), key_hash(key), orjson.dumps(asdict(record)))
    return key, record


async def find_key(redis: Redis, prefix: str, key: str) -> ApiKeyRecord | None:
    """The record of a presented key, or None when it is unknown or revoked."""
    if not key or len(key) > MAX_KEY_LENGTH:
        return None
    raw = await redis.hget(keys.api_keys_key(prefix), key_hash(key))
    return None if raw is None else _record(raw)


async def list_keys(redis: Redis, prefix: str, project_key: str) -> list[ApiKeyRecord]:
    """The project's keys (ids and creation times), oldest first."""
    records = [_record(raw) for raw in await redis.hvals(keys.api_keys_key(prefix))]
    mine = [record for record in records if record.project_key == project_key]
    return sorted(mine, key=lambda record: (record.created_at, record.id))


async def revoke_key(redis: Redis, prefix: str, key_or_id: str) -> ApiKeyRecord | None:
    """Delete a key given the key itself or its id; None when nothing matched."""
    stored = await redis.hgetall(keys.api_keys_key(prefix))
    wanted = key_hash(key_or_id).encode()
    for digest, raw in stored.items():
        record = _record(raw)
        if digest == wanted or record.id == key_or_id:
            await redis.hdel(keys.api_keys_key(prefix), digest)
            return record
    return None


def _record(raw: bytes | str) -> ApiKeyRecord:
    """A stored record; one stored before keys had scopes gets ``DEFAULT_SCOPES``."""
    fields = orjson.loads(raw)
    return ApiKeyRecord(**{**fields, "scopes": tuple(fields.get("scopes", DEFAULT_SCOPES))})
