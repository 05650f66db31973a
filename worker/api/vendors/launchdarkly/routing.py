"""LaunchDarkly's routes share one router whose errors take LaunchDarkly's documented
shape, ``{"code": ..., "message": ...}`` (``InvalidRequestErrorRep``,
``ForbiddenErrorRep``, ``NotFoundErrorRep`` ...), and whose keys may be presented as
LaunchDarkly documents them: ``Authorization: <key>``, without ``Bearer``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from worker.api.auth import api_key_header, bearer, granted_project
from worker.api.context import ApiContext, api_context
from worker.api.errors import ApiError, validation_sentence

CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    429: "rate_limited",
    503: "service_unavailable",
}
"""LaunchDarkly's error ``code`` of each status (its REST API's error table)."""


class ErrorRep(BaseModel):
    """LaunchDarkly's error body: the class of error and one sentence."""

    code: str
    message: str


class Forbidden(ErrorRep):
    """LaunchDarkly's 403 body."""

    code: Literal["forbidden"]


def error_body(status_code: int, message: str) -> dict[str, object]:
    """The body of a LaunchDarkly error of ``status_code``."""
    return {"code": CODES.get(status_code, "error"), "message": message}


def forbidden(message: str, _: str) -> Mapping[str, object]:
    """LaunchDarkly's 403 body (``ForbiddenErrorRep``: ``code`` and ``message``)."""
    return error_body(403, message)


def ld_error(status_code: int, message: str) -> ApiError:
    """An error answered in LaunchDarkly's shape."""
    return ApiError(status_code, message, body=error_body(status_code, message))


RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Forbidden if status == 403 else ErrorRep, "description": description}
    for status, description in (
        (400, "Invalid request"),
        (401, "Invalid or missing API key"),
        (403, "The API key lacks the route's scope"),
        (404, "No such experiment in the key's project"),
        (503, "Kafka or the result store is unavailable"),
    )
}
"""The documented errors of LaunchDarkly's routes, in its shape."""


class LaunchDarklyRoute(APIRoute):
    """A route whose errors, its own and FastAPI's request validation alike, are
    answered in LaunchDarkly's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as error:
                raise ld_error(400, validation_sentence(error)) from error
            except StarletteHTTPException as error:  # e.g. a body that is not UTF-8
                raise ld_error(error.status_code, f"{error.detail}.") from error
            except ApiError as error:
                if error.body is not None:
                    raise
                raise ApiError(
                    error.status_code,
                    error.message,
                    error.headers,
                    error_body(error.status_code, error.message),
                ) from error

        return route


router = APIRouter(prefix="/api/v2/projects", tags=["LaunchDarkly"], route_class=LaunchDarklyRoute)

bare_authorization = APIKeyHeader(
    name="Authorization",
    auto_error=False,
    description="Authorization: <API key>, as LaunchDarkly documents (Bearer also accepted)",
)


def ld_project(scope: str) -> Callable[..., Awaitable[str]]:
    """A dependency: the project of the presented key when it holds ``scope``; the key
    is read from ``Authorization: Bearer <key>``, ``Authorization: <key>`` or
    ``x-api-key``."""

    async def dependency(
        context: Annotated[ApiContext, Depends(api_context)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
        header_key: Annotated[str | None, Security(api_key_header)],
        authorization: Annotated[str | None, Security(bare_authorization)],
    ) -> str:
        key = credentials.credentials if credentials is not None else header_key
        if key is None and authorization and len(authorization.split()) == 1:
            key = authorization.strip()
        return await granted_project(context, key, scope, forbidden)

    return dependency
