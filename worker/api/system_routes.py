"""Operational endpoints: health (checks Redis) and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from worker.api.context import ApiContext, api_context
from worker.api.errors import ErrorBody
from worker.api.metrics import CONTENT_TYPE
from worker.store.connection import ping

router = APIRouter(tags=["Operations"])

Context = Annotated[ApiContext, Depends(api_context)]


class HealthResponse(BaseModel):
    """``GET /healthz``."""

    status: Literal["ok"]
    redis: Literal["ok"]


@router.get(
    "/healthz",
    response_model=HealthResponse,
    responses={503: {"model": ErrorBody, "description": "Redis does not answer"}},
    summary="Health check",
)
async def healthz(context: Context) -> HealthResponse:
    """200 when Redis answers a PING; a Redis failure becomes the 503 of the error handler."""
    await ping(context.redis)
    return HealthResponse(status="ok", redis="ok")


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus exposition"}},
    summary="Prometheus metrics",
)
async def metrics(context: Context) -> PlainTextResponse:
    """Request counts and latencies in the Prometheus text format."""
    return PlainTextResponse(context.metrics.render(), media_type=CONTENT_TYPE)
