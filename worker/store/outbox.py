"""Outboxes: Redis lists of what a script queued for Kafka, in the order it was queued.

The Lua scripts append (apply_batch.lua: a partition's dead letters and forwards;
record_decisions.lua: an experiment's decisions); the relay (worker/relay.py) reads the
oldest entries, publishes them, and only then drops them.
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.store.connection import Redis


async def oldest_entries(redis: Redis, outbox: str, count: int) -> list[bytes | str]:
    """Up to ``count`` entries from the head of the outbox, left in place."""
    return list(await redis.lrange(outbox, 0, count - 1))


# Trims the head only while it still is what was published: another flusher of the same
# outbox may have trimmed it first, and the entries now at the head were never sent.
_DROP_PUBLISHED = """
local head = redis.call('LRANGE', KEYS[1], 0, #ARGV - 1)
if #head ~= #ARGV then return 0 end
for i = 1, #ARGV do
  if head[i] ~= ARGV[i] then return 0 end
end
redis.call('LTRIM', KEYS[1], #ARGV, -1)
return 1
"""


async def drop_published(redis: Redis, outbox: str, published: Sequence[bytes | str]) -> bool:
    """Remove the published entries from the head of the outbox, if they still are its
    head; False if another flush dropped them first (its own publishing stands)."""
    if not published:
        return True
    script = redis.register_script(_DROP_PUBLISHED)
    return bool(await script(keys=[outbox], args=list(published)))
