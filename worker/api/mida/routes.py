"""Mida's public API v2, read side: same paths, parameters, fields, units and errors,
so a script written for Mida works by changing the base URL and the key."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from worker.api.auth import (
    IDENTIFIER,
    AuthorizedProject,
    ProjectKey,
    authorized_experiment,
    experiment_in_project,
    key_project,
    scoped_project,
    writable_experiment,
)
from worker.api.caching.definitions import parsed_definition
from worker.api.caching.responses import RenderedResult
from worker.api.caching.results import DEFAULT_QUERY
from worker.api.context import ApiContext, api_context
from worker.api.errors import ERROR_RESPONSES, ApiError, ErrorBody, bad_request
from worker.api.experiment_state import days_running, ended_at
from worker.api.mida.models import (
    DistributionResponse,
    ExperimentDetailsResponse,
    ExperimentList,
    MetricsResponse,
    ResultResponse,
    ShareLinkResponse,
    TimeseriesResponse,
)
from worker.api.mida.params import (
    ResultParams,
    SeriesParams,
    metric_goal_keys,
    reject_repeated,
    reject_structured_filters,
    result_query,
)
from worker.api.mida.shapes import (
    distribution,
    experiment_details,
    experiment_summary,
    goal_info,
    goal_of,
    metric_row,
    result_response,
    timeseries_row,
)
from worker.events.experiment import ExperimentDefinition
from worker.results.query import ResultQuery
from worker.store.api_keys import EXPERIMENT_WRITE
from worker.store.definitions import load_definitions
from worker.store.share_links import (
    TOKEN_PATTERN,
    ShareLink,
    create_share_link,
    current_share_link,
    find_share_link,
    revoke_share_link,
)

router = APIRouter(prefix="/v2", tags=["Mida v2"])

Context = Annotated[ApiContext, Depends(api_context)]

EXPERIMENT = "/project/{project_key}/experiment/{test_id}"
DEFAULT_SHARE_DAYS = 90
_TOKEN = re.compile(TOKEN_PATTERN, re.ASCII)


TestId = Annotated[
    str,
    Path(
        pattern=IDENTIFIER.pattern,
        description="The experiment id: 1-80 letters, digits, '_', '.' or '-' (Mida's are numbers).",
    ),
]
"""A malformed id is a 400 (FastAPI's validation, after the key was checked), a
well-formed unknown one a 404."""


async def mida_experiment(
    project_key: ProjectKey,
    test_id: TestId,
    owner: Annotated[str, Depends(key_project)],
    context: Context,
) -> ExperimentDefinition:
    """Dependency: the path's experiment for a key that may read (401, 403, 400, 404)."""
    return await authorized_experiment(project_key, test_id, owner, context)


async def mida_writable_experiment(
    project_key: ProjectKey,
    test_id: TestId,
    owner: Annotated[str, Depends(scoped_project(EXPERIMENT_WRITE))],
    context: Context,
) -> ExperimentDefinition:
    """Dependency: the path's experiment for a key that may write (share links)."""
    return await writable_experiment(project_key, test_id, owner, context)


AuthorizedExperiment = Annotated[ExperimentDefinition, Depends(mida_experiment)]
WritableExperiment = Annotated[ExperimentDefinition, Depends(mida_writable_experiment)]


async def mida_query(
    request: Request,
    definition: AuthorizedExperiment,
    params: Annotated[ResultParams, Depends()],
) -> ResultQuery:
    """Dependency: the validated query of Mida's result parameters (400 on any problem)."""
    return _checked_query(request, definition, params)


async def mida_series_query(
    request: Request,
    definition: AuthorizedExperiment,
    params: Annotated[SeriesParams, Depends()],
) -> ResultQuery:
    """Dependency: the query of /metrics and /timeseries, which take no breakdown."""
    if "breakdown_by" in request.query_params:
        endpoint = request.url.path.rsplit("/", 1)[-1]
        raise bad_request(f"breakdown_by is not supported by /{endpoint}.")
    return _checked_query(request, definition, params)


def _checked_query(
    request: Request, definition: ExperimentDefinition, params: SeriesParams
) -> ResultQuery:
    names = [name for name, _ in request.query_params.multi_items()]
    reject_structured_filters(names)
    reject_repeated(names)
    return result_query(params, definition)


MidaQuery = Annotated[ResultQuery, Depends(mida_query)]
SeriesQuery = Annotated[ResultQuery, Depends(mida_series_query)]


@router.get(
    "/project/{project_key}/experiments",
    response_model=ExperimentList,
    responses=ERROR_RESPONSES,
    summary="List experiments",
)
async def list_experiments(
    project_key: AuthorizedProject,
    context: Context,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size (at most 500).")] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000, description="Rows to skip.")] = 0,
) -> ExperimentList:
    """The project's experiments, by id, one page at a time."""
    mine = [
        definition
        for definition in await load_definitions(context.redis, context.prefix)
        if definition.project_key == project_key
    ]
    page = mine[offset : offset + limit]
    return ExperimentList(
        success=True,
        company_id=project_key,
        count=len(page),
        total=len(mine),
        limit=limit,
        offset=offset,
        experiments=[experiment_summary(definition) for definition in page],
    )


@router.get(
    EXPERIMENT,
    response_model=ExperimentDetailsResponse,
    responses=ERROR_RESPONSES,
    summary="Get experiment details",
)
async def get_experiment(definition: AuthorizedExperiment) -> ExperimentDetailsResponse:
    """Variants, goals and configuration of one experiment."""
    return experiment_details(definition)


@router.get(
    EXPERIMENT + "/result",
    response_model=ResultResponse,
    response_model_exclude_unset=True,
    responses=ERROR_RESPONSES,
    summary="Get experiment result",
)
async def get_result(
    request: Request, definition: AuthorizedExperiment, query: MidaQuery, context: Context
) -> Response:
    """Per-variant visitors, conversions, rates, lifts and statistics for one goal."""
    # Read first: the answer is made from data at least this new (caching.responses).
    state = await context.responses.state(definition, query)
    document, version = await context.results.versioned(definition, query)
    ended = await ended_at(context.redis, context.prefix, definition)
    now = datetime.now(UTC)
    response = result_response(definition, document, query.goal_key(definition), ended, now)
    # The bytes FastAPI sends for this response_model (pydantic's JSON, unset fields left out).
    body = response.model_dump_json(by_alias=True, exclude_unset=True).encode()
    if state.definition is not None and parsed_definition(state.definition) == definition:
        entry = RenderedResult(
            definition, query, state, version, ended, days_running(definition, ended, now), body
        )
        key = (definition.project_key, definition.id, request.scope["query_string"])
        context.responses.put(key, entry)
    return Response(body, media_type="application/json")


@router.get(
    EXPERIMENT + "/metrics",
    response_model=MetricsResponse,
    response_model_exclude_unset=True,
    responses=ERROR_RESPONSES,
    summary="Get experiment metrics (secondary goals)",
)
async def get_metrics(
    definition: AuthorizedExperiment,
    query: SeriesQuery,
    context: Context,
    metric_keys: Annotated[
        str | None, Query(description="Goal keys: comma-separated or a JSON array.")
    ] = None,
    goal_keys: Annotated[str | None, Query(description="Alias of metric_keys.")] = None,
) -> MetricsResponse:
    """The secondary goals (or the goals named) with the same rows as a result."""
    goals = metric_goal_keys(definition, metric_keys, goal_keys)
    document = await context.results.document(definition, query)
    return MetricsResponse(
        success=True,
        test_id=definition.id,
        test_name=definition.name,
        metrics=[metric_row(definition, document, goal) for goal in goals],
    )


@router.get(
    EXPERIMENT + "/timeseries",
    response_model=TimeseriesResponse,
    responses=ERROR_RESPONSES,
    summary="Get experiment timeseries (daily per variant)",
)
async def get_timeseries(
    definition: AuthorizedExperiment, query: SeriesQuery, context: Context
) -> TimeseriesResponse:
    """Daily rows per variant: each day the visitors who entered on it."""
    goal = query.goal_key(definition)
    days = await context.results.daily(definition, query)
    return TimeseriesResponse(
        success=True,
        test_id=definition.id,
        test_name=definition.name,
        goal=goal_info(goal_of(definition, goal)),
        tz=query.tz,
        rows=[timeseries_row(day, document, goal) for day, document in days],
    )


@router.get(
    EXPERIMENT + "/distribution",
    response_model=DistributionResponse,
    responses=ERROR_RESPONSES,
    summary="Get experiment traffic distribution",
)
async def get_distribution(definition: AuthorizedExperiment) -> DistributionResponse:
    """Configured per-variant traffic splits."""
    return distribution(definition)


@router.get(
    EXPERIMENT + "/share-link",
    response_model=ShareLinkResponse,
    responses=ERROR_RESPONSES,
    summary="Get the experiment's share link",
)
async def get_share_link(
    request: Request, definition: AuthorizedExperiment, context: Context
) -> ShareLinkResponse:
    """The live share link, if any (``is_public`` false when there is none)."""
    link = await current_share_link(
        context.redis, context.prefix, definition.project_key, definition.id
    )
    return _share_response(request, definition, link)


@router.post(
    EXPERIMENT + "/share-link",
    response_model=ShareLinkResponse,
    responses={**ERROR_RESPONSES, 201: {"model": ShareLinkResponse}},
    summary="Create the experiment's share link",
)
async def create_link(
    request: Request,
    response: Response,
    definition: WritableExperiment,
    context: Context,
    expires_in_days: Annotated[
        int, Query(ge=1, le=3650, description="Days until the link stops working.")
    ] = DEFAULT_SHARE_DAYS,
) -> ShareLinkResponse:
    """A link serving this result without a key (201), or the live one (200)."""
    link, created = await create_share_link(
        context.redis,
        context.prefix,
        definition.project_key,
        definition.id,
        timedelta(days=expires_in_days),
    )
    if created:
        response.status_code = 201
    return _share_response(request, definition, link)


@router.delete(
    EXPERIMENT + "/share-link",
    response_model=ShareLinkResponse,
    responses=ERROR_RESPONSES,
    summary="Revoke the experiment's share link",
)
async def delete_link(
    request: Request, definition: WritableExperiment, context: Context
) -> ShareLinkResponse:
    """Revoke the live link (nothing to revoke is not an error)."""
    await revoke_share_link(context.redis, context.prefix, definition.project_key, definition.id)
    return _share_response(request, definition, None)


@router.get(
    "/share/{token}",
    name="shared_result",
    response_model=ResultResponse,
    response_model_exclude_unset=True,
    responses={404: {"model": ErrorBody, "description": "Unknown, revoked or expired link"}},
    summary="Shared experiment result (no key)",
)
async def shared_result(token: str, context: Context) -> ResultResponse:
    """The result a share link serves: the experiment's default result."""
    definition = await shared_experiment(context, token)
    return await _mida_result(context, definition, DEFAULT_QUERY)


async def shared_experiment(context: ApiContext, token: str) -> ExperimentDefinition:
    """The experiment a live share link serves; 404 for any other token."""
    link = (
        await find_share_link(context.redis, context.prefix, token)
        if _TOKEN.fullmatch(token)
        else None
    )
    if link is None:
        raise ApiError(404, "This share link is unknown, revoked or expired.")
    return await experiment_in_project(context, link.project_key, link.experiment_id)


def _share_response(
    request: Request, definition: ExperimentDefinition, link: ShareLink | None
) -> ShareLinkResponse:
    return ShareLinkResponse(
        success=True,
        test_id=definition.id,
        company_id=definition.project_key,
        share_link=None
        if link is None
        else str(request.url_for("shared_result", token=link.token)),
        is_public=link is not None,
        expires_at=None if link is None else link.expires_at,
    )


async def _mida_result(
    context: ApiContext, definition: ExperimentDefinition, query: ResultQuery
) -> ResultResponse:
    document = await context.results.document(definition, query)
    return result_response(
        definition,
        document,
        query.goal_key(definition),
        await ended_at(context.redis, context.prefix, definition),
        datetime.now(UTC),
    )
