"""Schemathesis hooks of test_api_openapi.py: the rules across fields that JSON Schema
cannot state, kept out of generated requests (or, for a sum, satisfied by them) so that
every other rejection of a schema-valid request is a failure (ST202).

Each rule is tested on its own elsewhere:
- Mida's start_date after end_date (or, alone, after today) and goal_key naming another
  goal than goal_profile_id: test_api_params.py;
- Kameleoon's interval ending before it starts, ``sequentialTesting`` with
  ``bayesian: true``, ``goalId`` and ``goalsIds`` naming different goals, and a
  ``callbackUrl`` host off the allow-list: test_api_kameleoon.py (unit and integration);
- the Experiments API's splitPercentage summing to 100 and its single control:
  test_api_experiments_writes.py;
- LaunchDarkly's iteration: one baseline, allocationPercent summing to 100, a
  variationId per treatment, the primary metric among the metrics, a reallocation
  period for bandits only, no holdoutId on a holdout: test_launchdarkly_writes.py and
  test_api_launchdarkly_writes.py.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import schemathesis
from pydantic import Field, TypeAdapter, ValidationError

from worker.api.vendors.launchdarkly.inputs import PERCENT_PATTERN
from worker.events.fields import Identifier

# schemathesis types its hook decorator as a plain callable; apply_to is set on it at
# run time (schemathesis.hooks.to_filterable_hook).
hook: Any = schemathesis.hook

LD_EXPERIMENTS = r"^/api/v2/projects/\{projectKey\}/environments/\{environmentKey\}/experiments"
MIDA_RESULTS = r"^/v2/project/\{project_key\}/experiment/\{test_id\}/(result|metrics|timeseries)$"
KAMELEOON_RESULTS = r"^/(experiments/\{experimentId\}|feature-flags/\{featureFlagId\})/results$"


def _date(raw: object) -> date | None:
    try:
        return date.fromisoformat(raw) if isinstance(raw, str) and raw else None
    except ValueError:
        return None


@hook("filter_query").apply_to(path_regex=MIDA_RESULTS)
def mida_rules_across_fields(_: Any, query: dict[str, Any] | None) -> bool:
    """No start_date after end_date, nor (alone) after the earliest "today" of any tz;
    goal_key and goal_profile_id, when both given, alike."""
    query = query or {}
    key, profile = query.get("goal_key"), query.get("goal_profile_id")
    # Values of any type arrive here: negative cases break the schema on purpose.
    disagree = isinstance(key, str) and isinstance(profile, str) and "" != key != profile != ""
    start = _date(query.get("start_date"))
    if start is None:
        return not disagree
    end = _date(query.get("end_date"))
    latest = end if end is not None else (datetime.now(UTC) - timedelta(hours=12)).date()
    return start <= latest and not disagree


def _moment(raw: object) -> datetime | None:
    try:
        return datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        return None


def _interval_in_order(body: dict[str, Any]) -> bool:
    intervals = body.get("dateIntervals")
    if not isinstance(intervals, list) or len(intervals) != 1 or not isinstance(intervals[0], dict):
        return True
    start, end = _moment(intervals[0].get("start")), _moment(intervals[0].get("end"))
    if start is None or end is None:
        return True
    offset = start.utcoffset() or timedelta(0)
    try:
        end_date = (
            (end if end.tzinfo else end.replace(tzinfo=UTC)).astimezone(UTC) + offset
        ).date()
    except OverflowError:
        return True
    return start.date() <= end_date


@hook("filter_body").apply_to(path_regex=KAMELEOON_RESULTS)
def kameleoon_rules_across_fields(_: Any, body: Any) -> bool:
    """Only requests that no rule across fields refuses."""
    if not isinstance(body, dict):
        return True
    sequential_bayesian = body.get("bayesian") is True and body.get("sequentialTesting") is True
    return (
        _interval_in_order(body)
        and not sequential_bayesian
        and not _goal_names_disagree(body.get("goalId"), body.get("goalsIds"))
        and body.get("callbackUrl") is None
    )


def _goal_names_disagree(goal_id: object, goals_ids: object) -> bool:
    """Both given, naming different goals (numbers name the goal of their text)."""

    def texts(ids: object) -> object:
        return [str(i) for i in ids] if isinstance(ids, list) else ids

    return goal_id is not None and goals_ids is not None and texts(goal_id) != texts(goals_ids)


@hook("map_body").apply_to(method="POST", path="/api/experiments")
def one_control_and_splits_of_100(_: Any, body: Any) -> Any:
    """The variants' splitPercentage made to sum to 100 (whole percents), and at most one
    variant marked the control; only where each of them is schema-valid, so that a
    negative case keeps the violation it was generated with."""
    variants = body.get("variants") if isinstance(body, dict) else None
    if (
        isinstance(variants, list)
        and variants
        and all(isinstance(v, dict) and _valid_split(v.get("splitPercentage")) for v in variants)
        and all(v.get("isControl") is None or isinstance(v["isControl"], bool) for v in variants)
    ):
        controls = 0
        for variant, percent in zip(variants, _whole_percents(len(variants)), strict=True):
            variant["splitPercentage"] = percent
            controls += bool(variant.get("isControl"))
            if controls > 1 and variant.get("isControl"):
                variant["isControl"] = False
    return body


IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)
PERCENT: TypeAdapter[str] = TypeAdapter(Annotated[str, Field(pattern=PERCENT_PATTERN)])


def _valid(adapter: TypeAdapter[str], value: object) -> bool:
    """Whether ``value`` is schema-valid for the field the hook would rewrite: a
    negative case's violation must stay (rewriting it would make it valid)."""
    try:
        adapter.validate_python(value, strict=True)
    except ValidationError:
        return False
    return True


def _whole_percents(count: int) -> list[int]:
    """``count`` whole percents summing to 100, the remainder on the first."""
    share = 100 // count
    return [share + 100 - share * count] + [share] * (count - 1)


def _valid_split(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 100


@hook("map_body").apply_to(method="POST", path_regex=LD_EXPERIMENTS + "$")
def launchdarkly_experiment_across_fields(_: Any, body: Any) -> Any:
    """A new experiment whose first iteration obeys the iteration's rules, with a
    reallocation period only for a bandit and no holdoutId on a holdout."""
    if isinstance(body, dict) and isinstance(body.get("iteration"), dict):
        mab = body.get("type") == "mab"
        _iteration_across_fields(body["iteration"], mab)
        if body.get("type") == "holdout" and _valid(IDENTIFIER, body.get("holdoutId")):
            del body["holdoutId"]
    return body


@hook("map_body").apply_to(
    method="POST", path_regex=LD_EXPERIMENTS + r"/\{experimentKey\}/iterations$"
)
def launchdarkly_iteration_across_fields(_: Any, body: Any) -> Any:
    """A new iteration of the pinned experiment (no bandit) that obeys its rules."""
    if isinstance(body, dict):
        _iteration_across_fields(body, mab=False)
    return body


def _iteration_across_fields(iteration: dict[str, Any], mab: bool) -> None:
    """One baseline, allocationPercent of whole percents summing to 100, a variationId
    per treatment and the primary metric among the metrics; only where those fields are
    schema-valid, so that a negative case keeps its violation."""
    treatments = iteration.get("treatments")
    if not (isinstance(treatments, list) and treatments):
        return
    if not all(
        isinstance(t, dict)
        and isinstance(t.get("baseline"), bool)
        and _valid(PERCENT, t.get("allocationPercent"))
        and isinstance(t.get("parameters"), list)
        and len(t["parameters"]) == 1
        and isinstance(t["parameters"][0], dict)
        and _valid(IDENTIFIER, t["parameters"][0].get("variationId"))
        for t in treatments
    ):
        return
    percents = _whole_percents(len(treatments))
    for number, (treatment, percent) in enumerate(zip(treatments, percents, strict=True)):
        treatment["baseline"] = number == 0
        treatment["allocationPercent"] = str(percent)
        treatment["parameters"][0]["variationId"] = f"v{number}"
    metrics = iteration.get("metrics")
    keys = (
        [m.get("key") for m in metrics]
        if isinstance(metrics, list) and all(isinstance(m, dict) for m in metrics)
        else []
    )
    primary = iteration.get("primarySingleMetricKey")
    if _valid(IDENTIFIER, primary) and keys and _valid(IDENTIFIER, keys[0]):
        iteration["primarySingleMetricKey"] = keys[0]
    period = iteration.get("reallocationFrequencyMillis")
    # JSON Schema's integers include 891.0, and pydantic reads it as 891.
    valid_period = (
        isinstance(period, int | float)
        and not isinstance(period, bool)
        and period >= 1
        and float(period).is_integer()
    )
    if not mab and valid_period:
        del iteration["reallocationFrequencyMillis"]
