"""The pure parts of LaunchDarkly's writes: the create shape's mapping, the iteration
records, holdout buckets and refusals, and a bandit's reallocation period."""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from tests.unit.test_results_decisions import definition as decision_definition
from tests.unit.test_results_decisions import document
from worker.api.vendors.launchdarkly.inputs import ExperimentPatchInput, IterationInput
from worker.api.vendors.launchdarkly.shapes import iteration_rep, treatments
from worker.events.adapters import DefinitionError, parse_definition
from worker.events.assignment import Assignment
from worker.events.experiment import (
    ExperimentDefinition,
    ExperimentStatus,
    Iteration,
    IterationDesign,
    holdout_bucket,
)
from worker.ingestion.commands import holdout_refusal
from worker.results.decisions import DecisionState, decide

CREATE: dict[str, Any] = {
    "key": "paywall",
    "name": "Paywall",
    "description": "Three offers",
    "maintainerId": "member-1",
    "tags": ["growth"],
    "holdoutId": "program-holdout",
    "type": "mab",
    "iteration": {
        "hypothesis": "One offer wins",
        "canReshuffleTraffic": False,
        "metrics": [{"key": "subscribe"}, {"key": "visit"}],
        "primarySingleMetricKey": "subscribe",
        "treatments": [
            {
                "name": "Monthly",
                "baseline": True,
                "allocationPercent": "50",
                "parameters": [{"flagKey": "paywall-offer", "variationId": "monthly"}],
            },
            {
                "name": "Yearly",
                "baseline": False,
                "allocationPercent": "50",
                "parameters": [{"flagKey": "paywall-offer", "variationId": "yearly"}],
            },
        ],
        "flags": {
            "paywall-offer": {
                "ruleId": "fallthrough",
                "flagConfigVersion": 12,
                "notInExperimentVariationId": "monthly",
            }
        },
        "reallocationFrequencyMillis": 90_000,
    },
}


def test_the_create_shape_keeps_type_tags_holdout_and_its_first_iteration() -> None:
    experiment = parse_definition(CREATE, "shop")
    assert (experiment.type.value, experiment.status.value) == ("mab", "draft")
    assert (experiment.description, experiment.maintainer_id, experiment.tags) == (
        "Three offers", "member-1", ["growth"],
    )  # fmt: skip
    assert experiment.holdout_id == "program-holdout"
    assert experiment.reallocation_seconds == 90.0
    assert [(v.id, v.flag_key, v.traffic_weight) for v in experiment.variants] == [
        ("monthly", "paywall-offer", 0.5),
        ("yearly", "paywall-offer", 0.5),
    ]
    assert [(g.key, g.primary) for g in experiment.goals] == [("subscribe", True), ("visit", False)]
    record = experiment.iteration
    assert record is not None and record.design is None
    assert (record.id, record.hypothesis, record.can_reshuffle_traffic) == (
        "1", "One offer wins", False,
    )  # fmt: skip
    flag = record.flags["paywall-offer"]
    assert (flag.rule_id, flag.flag_config_version, flag.not_in_experiment_variation_id) == (
        "fallthrough", 12, "monthly",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.update(type="funnel"), "type must be one of experiment, mab, holdout"),
        (lambda p: p.update(type="experiment"), "reallocationFrequencyMillis applies to mab"),
    ],
)
def test_types_and_periods_that_cannot_be_kept_are_refused(change: Any, message: str) -> None:
    payload = copy.deepcopy(CREATE)
    change(payload)
    with pytest.raises(DefinitionError, match=message):
        parse_definition(payload, "shop")


def native(**fields: Any) -> dict[str, Any]:
    return {
        "id": "exp",
        "project_key": "shop",
        "name": "Exp",
        "variants": [{"id": "a", "name": "A", "is_control": True}, {"id": "b", "name": "B"}],
        "goals": [{"key": "buy", "name": "Buy", "primary": True}],
        **fields,
    }


def test_definitions_written_before_iterations_existed_still_validate() -> None:
    old = ExperimentDefinition.model_validate(native(status="live", type="holdout"))
    assert (old.iteration, old.draft_iteration, old.previous_iterations) == (None, None, [])
    assert (old.tags, old.holdout_id, old.reallocation_seconds) == ([], None, None)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"reallocation_seconds": 60}, "mab experiments only"),
        ({"holdout_id": "exp"}, "holdout_id must name another"),
        ({"type": "holdout", "holdout_id": "other"}, "holdout_id must name another"),
        (
            {
                "iteration": {
                    "id": "1",
                    "design": {"variants": native()["variants"], "goals": native()["goals"]},
                }
            },
            "the current iteration's design is the definition's own",
        ),
    ],
)
def test_inconsistent_definitions_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ExperimentDefinition.model_validate(native(**fields))


def test_the_holdout_bucket_is_launchdarklys_rule_seeded_by_the_holdout_id() -> None:
    for visitor in ("v1", "visitor-42", "Z"):
        digest = hashlib.sha1(f"program.{visitor}".encode()).hexdigest()
        assert holdout_bucket("program", visitor) == int(digest[:15], 16) / (16**15 - 1)
    holdout = ExperimentDefinition.model_validate(
        native(
            id="program",
            type="holdout",
            variants=[
                {"id": "held", "name": "Held", "is_control": True, "traffic_weight": 0.1},
                {"id": "free", "name": "Free", "traffic_weight": 0.9},
            ],
        )
    )
    held = sum(holdout.holds_out(f"v{i}") for i in range(20_000))
    assert 0.09 < held / 20_000 < 0.11  # 10 %, within five standard errors (0.2 %)


def assignment(experiment: str, variant: str, visitor: str) -> Assignment:
    return Assignment.model_validate(
        {
            "event_id": f"{experiment}-{visitor}",
            "experiment_id": experiment,
            "variant_id": variant,
            "visitor_id": visitor,
            "timestamp": "2026-12-01T10:00:00+00:00",
        }
    )


def test_a_running_holdout_refuses_its_held_out_visitors_everywhere_else() -> None:
    holdout = ExperimentDefinition.model_validate(
        native(
            id="program",
            type="holdout",
            status="live",
            variants=[
                {"id": "held", "name": "Held", "is_control": True, "traffic_weight": 0.5},
                {"id": "free", "name": "Free", "traffic_weight": 0.5},
            ],
        )
    )
    experiment = ExperimentDefinition.model_validate(native(status="live", holdout_id="program"))
    visitors = [f"v{i}" for i in range(40)]
    held = [v for v in visitors if holdout_bucket("program", v) < 0.5]
    free = [v for v in visitors if v not in held]
    assert held and free
    catalog = {"program": holdout, "exp": experiment}
    for visitor in held:
        refusal = holdout_refusal(experiment, assignment("exp", "a", visitor), catalog)
        assert refusal == (
            f"visitor {visitor!r} is held out by holdout 'program': experiment 'exp' does "
            "not enrol it"
        )
        assert holdout_refusal(holdout, assignment("program", "held", visitor), catalog) is None
        assert "is held out" in str(
            holdout_refusal(holdout, assignment("program", "free", visitor), catalog)
        )
    for visitor in free:
        assert holdout_refusal(experiment, assignment("exp", "b", visitor), catalog) is None
        assert holdout_refusal(holdout, assignment("program", "free", visitor), catalog) is None
        assert "is not held out" in str(
            holdout_refusal(holdout, assignment("program", "held", visitor), catalog)
        )
    # A holdout not started yet, or ended, keeps nobody out.
    for status in (ExperimentStatus.DRAFT, ExperimentStatus.COMPLETED):
        idle = {"program": holdout.model_copy(update={"status": status}), "exp": experiment}
        assert holdout_refusal(experiment, assignment("exp", "a", held[0]), idle) is None


def test_a_bandit_is_reallocated_at_most_once_per_period() -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    every_look = decision_definition(3, kind="mab", engine="bayesian")
    hourly = every_look.model_copy(update={"reallocation_seconds": 3600.0})

    def at(seconds: float, conversions: tuple[int, int, int]) -> Any:
        result = document(every_look, [5_000] * 3, list(conversions))
        return result.model_copy(update={"computed_at": start + timedelta(seconds=seconds)})

    looks = [at(0, (500, 500, 500)), at(60, (500, 650, 500)), at(3600, (500, 650, 500))]

    def reallocations(experiment: ExperimentDefinition) -> list[float]:
        state, moments = DecisionState(), []
        for look in looks:
            decisions = decide(experiment, state, look)
            moments += [
                (look.computed_at - start).total_seconds()
                for event in decisions.events
                if event.kind == "allocation_updated"
            ]
            state = decisions.state
        return moments

    assert reallocations(every_look) == [60.0]
    # The first look (equal arms, nothing moved) opens the hour: the leader's weights
    # wait for its end.
    assert reallocations(hourly) == [3600.0]


def test_iteration_inputs_are_checked_as_launchdarkly_documents_them() -> None:
    body = copy.deepcopy(CREATE["iteration"])
    assert IterationInput.model_validate(body).reallocationFrequencyMillis == 90_000
    for change, message in (
        (lambda b: b["treatments"][0].update(allocationPercent="60"), "sum to 100, got 110"),
        (lambda b: b["treatments"][0].update(allocationPercent="abc"), "should match pattern"),
        (lambda b: b["treatments"][0].update(allocationPercent="100.5"), "should match pattern"),
        (lambda b: b["treatments"][1].update(baseline=True), "exactly one treatment"),
        (lambda b: b.update(primarySingleMetricKey="nope"), "'nope' is not a metric"),
        (lambda b: b["metrics"][0].update(isGroup=True), "isGroup"),
        (lambda b: b.update(randomizationUnit="organization"), "randomizationUnit"),
        (lambda b: b.update(covariateId="x"), "covariateId"),
    ):
        bad = copy.deepcopy(body)
        change(bad)
        with pytest.raises(ValidationError, match=message):
            IterationInput.model_validate(bad)
    with pytest.raises(ValidationError, match="startIteration"):
        ExperimentPatchInput.model_validate({"instructions": [{"kind": "archiveExperiment"}]})


def test_treatments_show_a_bandits_weights_and_previous_iterations_their_own_design() -> None:
    experiment = parse_definition(CREATE, "shop")
    shares = treatments(experiment.variants, {"monthly": 0.25, "yearly": 0.75})
    assert [t.allocationPercent for t in shares] == ["25", "75"]
    earlier = IterationDesign(
        variants=[
            v.model_copy(update={"traffic_weight": w})
            for v, w in zip(experiment.variants, (3, 1), strict=True)
        ],
        goals=experiment.goals[:1],
    )
    ended = datetime(2026, 11, 1, tzinfo=UTC)
    record = Iteration(
        id="1",
        started_at=ended - timedelta(days=7),
        ended_at=ended,
        design=earlier,
        winning_variant_id="yearly",
    )
    rep = iteration_rep(experiment, record, "stopped")
    assert [t.allocationPercent for t in rep.treatments] == ["75", "25"]
    assert (rep.secondaryMetrics, rep.reallocationFrequencyMillis) == ([], None)
    assert (rep.startedAt, rep.endedAt, rep.winningTreatmentId) == (
        round((ended - timedelta(days=7)).timestamp() * 1000),
        round(ended.timestamp() * 1000),
        "yearly",
    )
