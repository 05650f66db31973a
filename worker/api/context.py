"""What every request handler needs, created once per app and found on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from worker.api.caching.api_keys import KeyCache
from worker.api.caching.responses import ResponseCache
from worker.api.caching.results import ResultSource
from worker.api.detached_tasks import DetachedTasks
from worker.api.metrics import RequestMetrics
from worker.api.publishing import DefinitionPublisher
from worker.config import Settings
from worker.store.connection import Redis


@dataclass(frozen=True)
class ApiContext:
    """Settings, the Redis client, the caches, the request metrics, the tasks
    requests leave running and the publisher of definition writes."""

    settings: Settings
    redis: Redis
    results: ResultSource
    metrics: RequestMetrics
    keys: KeyCache
    responses: ResponseCache
    detached: DetachedTasks
    publisher: DefinitionPublisher

    @property
    def prefix(self) -> str:
        return self.settings.key_prefix


async def api_context(request: Request) -> ApiContext:
    """Dependency: the context of the app serving the request."""
    context: ApiContext = request.app.state.context
    return context
