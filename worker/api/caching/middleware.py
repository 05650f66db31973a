"""ASGI layer answering a repeated Mida result question from the response cache.

It sits in front of FastAPI's routing, dependencies and serialisation, which cost
several times more than the answer itself once results are cached (see the README's
read-API latency section). It answers only when everything is already known: the key
was looked up within ``KEY_CACHE_SECONDS``, belongs to the path's project and may read,
and the response cache holds a current answer to the same query string. Anything else,
including any Redis error, goes to the FastAPI app unchanged, which validates,
authenticates, answers errors and fills the cache.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from worker.api.caching.api_keys import KeyCache, presented_key
from worker.api.caching.responses import ResponseCache
from worker.store.api_keys import EXPERIMENT_READ
from worker.store.connection import RedisError


class CachedResultsMiddleware:
    """Serves ``GET`` Mida results from :class:`ResponseCache` when current.

    ``route`` is the app's own route of Mida's result: its path is matched with the
    pattern Starlette compiled from the route's template, so the two never disagree.
    """

    def __init__(
        self, app: ASGIApp, keys: KeyCache, responses: ResponseCache, route: APIRoute
    ) -> None:
        self.app = app
        self._keys = keys
        self._responses = responses
        self._route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            match = self._route.path_regex.match(scope["path"])
            body = (
                None
                if match is None
                else await self._cached(scope, match["project_key"], match["test_id"])
            )
            if body is not None:
                scope["route"] = self._route  # the request metrics' label
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        # What Starlette's Response(media_type="application/json") sends.
                        "headers": [
                            (b"content-length", str(len(body)).encode()),
                            (b"content-type", b"application/json"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    async def _cached(self, scope: Scope, project: str, experiment_id: str) -> bytes | None:
        key = presented_key(_header(scope, b"authorization"), _header(scope, b"x-api-key"))
        record = None if key is None else self._keys.cached_record(key)
        if record is None or record.project_key != project or not record.allows(EXPERIMENT_READ):
            return None
        try:
            return await self._responses.current(
                (project, experiment_id, scope["query_string"]), datetime.now(UTC)
            )
        except RedisError:
            return None  # the app answers, with its own error handling


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), as Starlette's ``get`` reads it."""
    for header, value in scope["headers"]:
        if header == name:
            return str(value.decode("latin-1"))
    return None
