"""Kameleoon's Automation API results flow: ask for results, get a data code at once,
read the result under the code when the background computation is done.

``callbackUrl`` is only contacted when its host is listed in the setting
``AB_CALLBACK_ALLOWED_HOSTS`` (comma-separated, empty by default), so the server can
never be made to reach an internal address; a request naming another host is a 400
saying so (nothing is computed), and redirects are not followed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel

from worker.api.auth import experiment_in_project, scoped_project
from worker.api.caching.results import ResultSource
from worker.api.context import ApiContext, api_context
from worker.api.errors import ERROR_RESPONSES, ApiError, bad_request
from worker.api.kameleoon.auth import Caller, KameleoonCaller, readable_experiment
from worker.api.kameleoon.params import (
    Interval,
    ResultsPlan,
    ResultsRequest,
    periods,
    results_plan,
)
from worker.api.kameleoon.shapes import REFERENCE, GoalBlocks, variation_data
from worker.results.contract import GoalBlock
from worker.store import keys
from worker.store.api_keys import EXPERIMENT_WRITE
from worker.store.data_codes import (
    CODE_PATTERN,
    DataCode,
    create_data_code,
    find_data_code,
    finish_data_code,
)
from worker.store.share_links import create_share_link, revoke_share_link

log = logging.getLogger(__name__)

router = APIRouter(tags=["Kameleoon"])

Context = Annotated[ApiContext, Depends(api_context)]
CALLBACK_TIMEOUT_SECONDS = 5.0
DEFAULT_SHARE_DAYS = 7
UNKNOWN_CODE = "This dataCode is unknown or expired."
SHUT_DOWN = "The server shut down before the computation finished; try again."
_CODE = re.compile(CODE_PATTERN, re.ASCII)


class DataCodeResponse(BaseModel):
    """The answer of a results request."""

    dataCode: str


class ResultsResponse(BaseModel):
    """The state of a data code, with the data once READY."""

    status: Literal["PENDING", "READY", "ERROR"]
    data: dict[str, Any] | None = None
    error: str | None = None


class ShareResponse(BaseModel):
    """A shared token for one experiment's Kameleoon results."""

    token: str
    experimentId: str
    expiresAt: str


@router.post(
    "/experiments/{experimentId}/results",
    response_model=DataCodeResponse,
    responses=ERROR_RESPONSES,
    summary="Request experiment results (Kameleoon)",
)
async def experiment_results(
    experimentId: str, body: ResultsRequest, caller: KameleoonCaller, context: Context
) -> DataCodeResponse:
    """Start the computation and answer its data code at once."""
    return await _start(context, caller, experimentId, body)


@router.post(
    "/feature-flags/{featureFlagId}/results",
    response_model=DataCodeResponse,
    responses=ERROR_RESPONSES,
    summary="Request feature flag results (Kameleoon)",
)
async def feature_flag_results(
    featureFlagId: str, body: ResultsRequest, caller: KameleoonCaller, context: Context
) -> DataCodeResponse:
    """The same computation for a feature flag's experiment."""
    return await _start(context, caller, featureFlagId, body)


@router.get(
    "/results",
    response_model=ResultsResponse,
    response_model_exclude_none=True,
    responses=ERROR_RESPONSES,
    summary="Read results by data code (Kameleoon)",
)
async def read_results(
    caller: KameleoonCaller,
    context: Context,
    dataCode: Annotated[str, Query(max_length=100, description="The code of a results request.")],
) -> ResultsResponse:
    """PENDING, READY with the data, or ERROR with a sentence; 404 once expired."""
    record = (
        await find_data_code(context.redis, context.prefix, dataCode)
        if _CODE.fullmatch(dataCode)
        else None
    )
    if record is None or not caller.may_read(record.project_key, record.experiment_id):
        raise ApiError(404, UNKNOWN_CODE)
    return ResultsResponse(status=record.status, data=record.data, error=record.error)


@router.post(
    "/experiments/{experimentId}/share",
    response_model=ShareResponse,
    responses=ERROR_RESPONSES,
    summary="Share an experiment's Kameleoon results",
)
async def share_experiment(
    experimentId: str,
    project_key: Annotated[str, Depends(scoped_project(EXPERIMENT_WRITE))],
    context: Context,
    expiresInDays: Annotated[
        int, Query(ge=1, le=365, description="Days until the token stops working.")
    ] = DEFAULT_SHARE_DAYS,
) -> ShareResponse:
    """A read-only token for this experiment's results endpoints (API keys that may
    write only): the live one, or a new one once it was revoked or expired."""
    definition = await experiment_in_project(context, project_key, experimentId)
    link, _ = await create_share_link(
        context.redis,
        keys.kameleoon_share_prefix(context.prefix),
        project_key,
        definition.id,
        timedelta(days=expiresInDays),
    )
    return ShareResponse(token=link.token, experimentId=definition.id, expiresAt=link.expires_at)


@router.delete(
    "/experiments/{experimentId}/share",
    status_code=204,
    response_class=Response,
    responses=ERROR_RESPONSES,
    summary="Revoke an experiment's shared token",
)
async def revoke_share(
    experimentId: str,
    project_key: Annotated[str, Depends(scoped_project(EXPERIMENT_WRITE))],
    context: Context,
) -> Response:
    """Revoke the live shared token at once (204, also when there was none); the next
    ``POST .../share`` issues a new one."""
    definition = await experiment_in_project(context, project_key, experimentId)
    await revoke_share_link(
        context.redis, keys.kameleoon_share_prefix(context.prefix), project_key, definition.id
    )
    return Response(status_code=204)


async def _start(
    context: ApiContext, caller: Caller, experiment_id: str, body: ResultsRequest
) -> DataCodeResponse:
    """Validate the request, then compute in the background under a new data code."""
    definition = await readable_experiment(context, caller, experiment_id)
    plan = results_plan(body, definition)
    callback = _allowed_callback(body.callbackUrl, context.settings.callback_allowed_hosts)
    record = await create_data_code(
        context.redis, context.prefix, definition.project_key, definition.id
    )
    context.detached.start(_run(context, record, plan, callback))
    return DataCodeResponse(dataCode=record.code)


async def _run(
    context: ApiContext, record: DataCode, plan: ResultsPlan, callback: str | None
) -> None:
    """Compute, store the outcome under the code, then call back if allowed."""
    try:
        data = await kameleoon_data(context.results, plan)
    except ApiError as error:
        await finish_data_code(context.redis, context.prefix, record, error=error.message)
    except asyncio.CancelledError:
        # Cancelled by the app's shutdown: the code must not stay PENDING until it expires.
        await finish_data_code(context.redis, context.prefix, record, error=SHUT_DOWN)
        raise
    except Exception:
        log.exception("Kameleoon results of %s failed", record.experiment_id)
        await finish_data_code(
            context.redis, context.prefix, record, error="The computation failed; try again."
        )
    else:
        await finish_data_code(context.redis, context.prefix, record, data=data)
    if callback is not None:
        await _call_back(callback, record.code)


async def kameleoon_data(results: ResultSource, plan: ResultsPlan) -> dict[str, Any]:
    """The ``data`` of a plan: the whole interval, and its breakdown if any."""
    document = await results.document(plan.definition, plan.query)
    breakdown: dict[str, GoalBlocks] = {REFERENCE: document.goals}
    if plan.interval == "DAY":
        breakdown.update(await _daily_blocks(results, plan))
    elif plan.interval is not None:
        breakdown.update(await _period_blocks(results, plan, plan.interval))
    else:
        for label, segment in document.segments.items():
            breakdown[label] = segment.goals
    return variation_data(breakdown, plan.goals)


async def _daily_blocks(results: ResultSource, plan: ResultsPlan) -> dict[str, GoalBlocks]:
    """Day (ISO date) → goal blocks of the visitors entering that day."""
    days: dict[str, dict[str, GoalBlock]] = {}
    for goal in plan.goals:
        query = plan.query.model_copy(update={"goal": goal})
        for day, daily in await results.daily(plan.definition, query):
            days.setdefault(day.isoformat(), {})[goal] = daily.goals[goal]
    return dict(days)


async def _period_blocks(
    results: ResultSource, plan: ResultsPlan, interval: Interval
) -> dict[str, GoalBlocks]:
    """Week or month (its first day, the first one clipped to the interval) → goal
    blocks of the visitors entering in it, from the period of the first to that of the
    last day with visitors."""
    query = plan.query.model_copy(update={"goal": plan.goals[0]})
    days = [day for day, _ in await results.daily(plan.definition, query)]
    if not days:
        return {}
    blocks: dict[str, GoalBlocks] = {}
    for first, last in periods(plan.query.start_date or days[0], days[-1], interval):
        if last >= days[0]:
            period = plan.query.model_copy(update={"start_date": first, "end_date": last})
            blocks[first.isoformat()] = (await results.document(plan.definition, period)).goals
    return blocks


def _allowed_callback(url: str | None, allowed_hosts: frozenset[str]) -> str | None:
    """The URL when it is an http(s) URL to an allowed host, else a 400 that says why."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad_request("callbackUrl must be an http or https URL.")
    if parts.hostname.lower() not in allowed_hosts:
        raise bad_request(
            f"callbackUrl host {parts.hostname.lower()!r} is not allowed: this server calls "
            "back only the hosts listed in its AB_CALLBACK_ALLOWED_HOSTS setting."
        )
    return url


async def _call_back(url: str, code: str) -> None:
    try:
        async with httpx.AsyncClient(timeout=CALLBACK_TIMEOUT_SECONDS) as client:
            await client.post(url, json={"dataCode": code})
    except httpx.HTTPError as error:
        log.warning("callback to %s failed: %s", url, error)
