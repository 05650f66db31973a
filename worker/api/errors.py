"""Every failure becomes ``{"error": "one sentence"}`` with the right status; never a 500
for anything a client sent."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from worker.store.connection import REDIS_UNAVAILABLE

STORAGE_DOWN = "The result store (Redis) is unavailable; try again shortly."
log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str


class ApiError(Exception):
    """An expected failure with its HTTP status, a sentence for the client, the
    headers the status calls for (``Retry-After`` of a 503) and, for families that
    document an error shape of their own, the body in that shape (else ``{"error"}``)."""

    def __init__(
        self,
        status_code: int,
        message: str,
        headers: Mapping[str, str] | None = None,
        body: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = dict(headers or {})
        self.body = None if body is None else dict(body)


def bad_request(message: str) -> ApiError:
    """400: the request itself is wrong."""
    return ApiError(400, message)


UNAUTHORIZED = "Invalid or missing API key."
EXPERIMENT_NOT_FOUND = "Experiment not found or belongs to a different project."

ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "Invalid parameters"),
        (401, UNAUTHORIZED),
        (403, "The API key lacks the scope this route needs"),
        (404, EXPERIMENT_NOT_FOUND),
        (503, "Busy (too many scans: see Retry-After) or the result store is unavailable"),
    )
}
"""The documented error responses of the authenticated Mida routes (for OpenAPI)."""


def error_headers(status_code: int, headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """``headers`` and those of the status: 401s name the accepted scheme, as RFC 9110
    asks."""
    scheme = {"WWW-Authenticate": "Bearer"} if status_code == 401 else {}
    return scheme | dict(headers or {})


def error_response(
    status_code: int,
    message: str,
    headers: Mapping[str, str] | None = None,
    body: Mapping[str, object] | None = None,
) -> JSONResponse:
    """The JSON error response (``{"error": message}`` unless ``body`` is given), with
    :func:`error_headers`."""
    return JSONResponse(
        {"error": message} if body is None else dict(body),
        status_code=status_code,
        headers=error_headers(status_code, headers),
    )


def validation_sentence(error: RequestValidationError) -> str:
    """The first problem of a request FastAPI could not parse, as one sentence."""
    problems = error.errors()
    if not problems:
        return "The request is invalid."
    first = problems[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("query", "path"))
    message = str(first.get("msg", "is invalid")).rstrip(".")
    return f"Invalid parameter {where or 'value'}: {message[:1].lower()}{message[1:]}."


def allowed_methods(app: FastAPI, request: Request) -> str:
    """The methods of every route whose path matches the request, for the ``Allow``
    header of a 405 (RFC 9110). Starlette names only the first route it tried, while a
    path served by several routes (GET and PATCH of one resource) allows them all."""
    methods: set[str] = set()
    for route in app.router.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(request.scope)
            if match is not Match.NONE:
                methods |= route.methods
    return ", ".join(sorted(methods))


def install_error_handlers(
    app: FastAPI, headers_for_path: Callable[[str], Mapping[str, str]] | None = None
) -> None:
    """Register the handlers that give every error the ``{"error": ...}`` shape.

    ``headers_for_path`` gives the headers a 500 on that path carries: Starlette answers
    a 500 outside every middleware, so a middleware's headers never reach it.
    """

    async def api_error(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ApiError)
        return error_response(error.status_code, error.message, error.headers, error.body)

    async def invalid_request(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return error_response(400, validation_sentence(error))

    async def http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = allowed_methods(app, request)
        return error_response(error.status_code, str(error.detail), headers)

    async def storage_down(request: Request, error: Exception) -> JSONResponse:
        log.warning("Redis unavailable during %s %s: %s", request.method, request.url.path, error)
        return error_response(503, STORAGE_DOWN)

    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        headers = dict(headers_for_path(request.url.path)) if headers_for_path else None
        return error_response(500, "Internal error; the server log has the details.", headers)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for unavailable in REDIS_UNAVAILABLE:
        app.add_exception_handler(unavailable, storage_down)
    app.add_exception_handler(Exception, unexpected)
