"""LaunchDarkly's "Get experiment"."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from worker.api.auth import experiment_in_project
from worker.api.context import ApiContext, api_context
from worker.api.openapi_patterns import alternatives, comma_list
from worker.api.vendors.launchdarkly.routing import RESPONSES, ld_error, ld_project, router
from worker.api.vendors.launchdarkly.shapes import Experiment, experiment_rep
from worker.store.api_keys import EXPERIMENT_READ

EXPANDABLE = {
    "previousIterations",
    "draftIteration",
    "secondaryMetrics",
    "treatments",
    "analysisConfig",
}
"""The fields LaunchDarkly includes only when ``expand`` names them; ours are always there."""


@router.get(
    "/{projectKey}/environments/{environmentKey}/experiments/{experimentKey}",
    response_model=Experiment,
    responses=RESPONSES,
    summary="Get experiment (LaunchDarkly)",
)
async def get_experiment(
    projectKey: str,
    environmentKey: str,
    experimentKey: str,
    project_key: Annotated[str, Depends(ld_project(EXPERIMENT_READ))],
    context: Annotated[ApiContext, Depends(api_context)],
    expand: Annotated[
        str | None,
        Query(
            max_length=200,
            json_schema_extra={"pattern": comma_list(alternatives(EXPANDABLE), spaces=False)},
            description="Accepted for compatibility: every expandable field "
            f"({', '.join(sorted(EXPANDABLE))}) is always included.",
        ),
    ] = None,
) -> Experiment:
    """The experiment, its current, draft and previous iterations and its analysis
    configuration."""
    unknown = sorted(set(filter(None, (expand or "").split(","))) - EXPANDABLE)
    if unknown:
        raise ld_error(
            400, f"expand accepts {', '.join(sorted(EXPANDABLE))}; not {', '.join(unknown)}."
        )
    definition = await experiment_in_project(
        context, projectKey if projectKey == project_key else None, experimentKey
    )
    return await experiment_rep(context, definition, projectKey, environmentKey)
