"""Share links: an unguessable token that serves one experiment's result without a key.

A link expires (Redis TTL) and can be revoked. Each experiment has at most one
live link, found through an index key, so it can always be shown and revoked.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import orjson

from worker.store import keys
from worker.store.connection import Redis

TOKEN_BYTES = 32
TOKEN_PATTERN = r"^[A-Za-z0-9_\-]{43}$"
"""What ``secrets.token_urlsafe(32)`` produces; anything else is not a token."""


@dataclass(frozen=True)
class ShareLink:
    """A live link: the token, what it serves, and until when."""

    token: str
    project_key: str
    experiment_id: str
    created_at: str
    expires_at: str


async def find_share_link(redis: Redis, prefix: str, token: str) -> ShareLink | None:
    """The live link of a token, or None when it is unknown, revoked or expired."""
    raw = await redis.get(keys.share_key(prefix, token))
    return None if raw is None else ShareLink(**orjson.loads(raw))


async def current_share_link(
    redis: Redis, prefix: str, project_key: str, experiment_id: str
) -> ShareLink | None:
    """The experiment's live link, if it has one."""
    token = await redis.get(keys.share_index_key(prefix, project_key, experiment_id))
    return None if token is None else await find_share_link(redis, prefix, _text(token))


async def create_share_link(
    redis: Redis, prefix: str, project_key: str, experiment_id: str, ttl: timedelta
) -> tuple[ShareLink, bool]:
    """The experiment's live link and whether this call created it (else it existed)."""
    existing = await current_share_link(redis, prefix, project_key, experiment_id)
    if existing is not None:
        return existing, False
    now = datetime.now(UTC)
    link = ShareLink(
        token=secrets.token_urlsafe(TOKEN_BYTES),
        project_key=project_key,
        experiment_id=experiment_id,
        created_at=now.isoformat(timespec="seconds"),
        expires_at=(now + ttl).isoformat(timespec="seconds"),
    )
    seconds = max(int(ttl.total_seconds()), 1)
    # The record first, then the index with NX: of two concurrent creators exactly one
    # wins the index, and the other withdraws its record, so no live link is unlisted.
    await redis.set(keys.share_key(prefix, link.token), orjson.dumps(asdict(link)), ex=seconds)
    index = keys.share_index_key(prefix, project_key, experiment_id)
    if await redis.set(index, link.token, nx=True, ex=seconds):
        return link, True
    winner = await current_share_link(redis, prefix, project_key, experiment_id)
    if winner is not None:
        await redis.delete(keys.share_key(prefix, link.token))
        return winner, False
    # The index names a link that no longer exists (a revoke cut short): replace it.
    await redis.set(index, link.token, ex=seconds)
    return link, True


async def revoke_share_link(
    redis: Redis, prefix: str, project_key: str, experiment_id: str
) -> bool:
    """Revoke the experiment's live link; False when it had none."""
    index = keys.share_index_key(prefix, project_key, experiment_id)
    token = await redis.get(index)
    if token is None:
        return False
    await redis.delete(keys.share_key(prefix, _text(token)))
    await redis.delete(index)
    return True


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
