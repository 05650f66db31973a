"""Enumerated context values (issue 13): every documented value is accepted, any other
text is counted as `other` with its text kept, and Mida's filters reject values that
are outside a criterion's fixed list instead of answering with nothing.

The path from a Kafka message to a result is followed without Redis: the planner's
command gives the segment cell (the counters) and the extended context (the visitor
state), and both query paths are checked against plain-Python counts.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from worker.api.errors import ApiError
from worker.api.mida.params import ResultParams, parse_custom_filter, result_query
from worker.cli.results_command import build_query
from worker.errors import WorkerError
from worker.events import json_schemas
from worker.events.assignment import RAW_TEXT_CHARS, Assignment
from worker.events.enums import Browser, Device, OperatingSystem, Source
from worker.events.experiment import ExperimentDefinition
from worker.events.segment_cell import SegmentCell
from worker.ingestion.commands import SourceMessage, plan_assignment, segment_cell
from worker.ingestion.partitioning import partition_for
from worker.results.cell_aggregation import CellTable, aggregate_cells
from worker.results.planning import plan_query
from worker.results.query import Condition, ResultQuery
from worker.results.visitor_scan import VisitorTable, scan_visitors
from worker.store.counter_reader import CellKey
from worker.store.visitor_reader import VisitorState

MIDA_BROWSERS = (
    "chrome", "safari", "firefox", "edge", "edge_chromium", "edge_legacy", "brave",
    "vivaldi", "yandex", "chromium", "samsung", "uc", "duckduckgo", "silk", "facebook",
    "instagram", "opera", "ie",
)  # fmt: skip
"""Mida's documented browser values (issue 13, DESIGN.md section 3), written out here
rather than read from the enum, so that a value dropped from the enum fails a test."""
ISSUE_13_BROWSERS = (
    "edge_chromium", "edge_legacy", "brave", "vivaldi", "yandex", "chromium", "uc",
    "duckduckgo", "silk", "facebook", "instagram",
)  # fmt: skip

PARTITIONS = 12
HOUR_MS = 3_600_000
ENTRY_MS = 1_763_625_600_000  # 2025-11-20T08:00:00Z
DEFINITION = ExperimentDefinition.model_validate(
    {
        "id": "exp-e",
        "project_key": "shop",
        "name": "Enumerated values",
        "status": "live",
        "variants": [
            {"id": "0", "name": "Control", "is_control": True},
            {"id": "1", "name": "Red"},
        ],
        "goals": [{"key": "buy", "name": "Buy", "primary": True}],
    }
)


def assignment(**context: Any) -> dict[str, Any]:
    return {
        "event_id": "evt-1",
        "experiment_id": "exp-e",
        "variant_id": "0",
        "visitor_id": "visitor-1",
        "timestamp": "2025-11-20T08:00:00Z",
        "context": context,
    }


def context_of(**context: Any) -> Any:
    return Assignment.model_validate_json(orjson.dumps(assignment(**context))).context


# ------------------------------------------------------------------------ the model


@pytest.mark.parametrize("browser", MIDA_BROWSERS)
def test_every_documented_browser_is_its_own_value(browser: str) -> None:
    context = context_of(browser=browser)
    assert context.browser == browser and context.browser is Browser(browser)
    assert context.raw is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("edge_chromium", "edge_chromium"), ("Brave", "brave"), (" EDGE_Legacy ", "edge_legacy")],
)
def test_documented_values_in_any_case(text: str, expected: str) -> None:
    context = context_of(browser=text)
    assert context.browser is Browser(expected)
    assert context.raw is None


def test_other_values_of_every_field_count_as_other_with_their_text_kept() -> None:
    context = context_of(
        device="Smartwatch", browser="some-new-browser", os="BeOS 5", source="tv", country="DE"
    )
    assert (context.device, context.browser, context.os, context.source) == (
        Device.OTHER,
        Browser.OTHER,
        OperatingSystem.OTHER,
        Source.OTHER,
    )
    assert context.raw == {
        "device": "Smartwatch",
        "browser": "some-new-browser",
        "os": "BeOS 5",
        "source": "tv",
    }
    assert context.country == "DE"


def test_known_and_unknown_values_mix() -> None:
    context = context_of(device="Mobile", browser="Netscape", os="ios", source="PAID")
    assert (context.device, context.os, context.source) == (
        Device.MOBILE,
        OperatingSystem.IOS,
        Source.PAID,
    )
    assert context.browser is Browser.OTHER
    assert context.raw == {"browser": "Netscape"}


def test_long_unknown_text_is_kept_shortened_and_blank_text_is_just_other() -> None:
    long = context_of(browser="x" * 5000)
    assert long.browser is Browser.OTHER
    assert long.raw == {"browser": "x" * RAW_TEXT_CHARS}
    blank = context_of(browser="  ", os="")
    assert (blank.browser, blank.os, blank.raw) == (Browser.OTHER, OperatingSystem.OTHER, None)


@pytest.mark.parametrize("value", [7, 1.5, True, ["chrome"], {"name": "chrome"}])
def test_a_value_that_is_not_text_is_still_a_schema_violation(value: object) -> None:
    with pytest.raises(ValidationError) as error:
        context_of(browser=value)
    assert [item["loc"] for item in error.value.errors()] == [("context", "browser")]


def test_raw_is_set_by_validation_only() -> None:
    with pytest.raises(ValidationError) as error:
        context_of(browser="chrome", raw={"browser": "forged"})
    assert [item["loc"] for item in error.value.errors()] == [("context", "raw")]
    # Also beside an unknown value, whose own raw text would otherwise replace it.
    with pytest.raises(ValidationError) as error:
        context_of(browser="Netscape", raw={"browser": "forged"})
    assert [item["loc"] for item in error.value.errors()] == [("context", "raw")]


def test_the_schema_accepts_any_text_and_lists_the_known_values() -> None:
    schema = json_schemas.generate(json_schemas.MODELS)["ab.assignments.schema.json"]
    properties = schema["$defs"]["Context"]["properties"]
    for field, enum_name in (
        ("device", "Device"),
        ("browser", "Browser"),
        ("os", "OperatingSystem"),
        ("source", "Source"),
    ):
        assert properties[field]["anyOf"] == [
            {"$ref": f"#/$defs/{enum_name}"},
            {"type": "string"},
        ]
        assert "other" in properties[field]["description"]
    assert set(MIDA_BROWSERS) < set(schema["$defs"]["Browser"]["enum"])
    assert "raw" not in properties  # an output of validation, not an input field


# ---------------------------------------------------------------------- the planner


def plan(event: dict[str, Any]) -> dict[str, Any]:
    visitor = event["visitor_id"]
    message = SourceMessage(
        topic="ab.assignments",
        partition=partition_for(visitor, PARTITIONS),
        offset=7,
        key=visitor.encode(),
        value=orjson.dumps(event),
    )
    return dict(plan_assignment(message, {DEFINITION.id: DEFINITION}, PARTITIONS).command)


def test_a_documented_browser_counts_in_its_own_cell() -> None:
    command = plan(assignment(device="desktop", browser="Edge_Chromium", os="windows"))
    assert command["k"] == "a"
    assert command["c"] == "desktop|edge_chromium|windows|ZZ|new|other"
    assert "ctx" not in command  # nothing to keep: no extended context, no raw text


def test_an_unknown_browser_counts_as_other_and_its_text_reaches_the_visitor_state() -> None:
    command = plan(assignment(device="mobile", browser="Some-New-Browser", region="north"))
    assert command["k"] == "a"  # counted, not dead-lettered
    assert command["c"] == "mobile|other|other|ZZ|new|other"
    assert orjson.loads(command["ctx"]) == {
        "region": "north",
        "raw": {"browser": "Some-New-Browser"},
    }


def test_segment_cell_of_known_and_unknown_values() -> None:
    event = Assignment.model_validate(
        assignment(device="TABLET", browser="brave", os="Haiku", source="email", country="fr")
    )
    assert segment_cell(event) == "tablet|brave|other|FR|new|email"


# ------------------------------------------------- counters and scan, from commands

TRAFFIC = [
    # (browser as sent, variant, converted)
    *[("edge_chromium", "0", n % 3 == 0) for n in range(9)],
    *[("Edge_Chromium", "1", n % 2 == 0) for n in range(6)],
    *[("brave", "1", n % 4 == 0) for n in range(8)],
    *[("some-new-browser", "0", n % 2 == 0) for n in range(5)],
    *[("Netscape Navigator", "1", True) for n in range(3)],
    *[("chrome", "0", n % 5 == 0) for n in range(10)],
    *[("other", "1", False) for n in range(2)],
]


def visitor_states() -> list[VisitorState]:
    """What the sink keeps of each planned assignment (cell and extended context), with
    one goal event for a converted visitor."""
    states: list[VisitorState] = []
    for number, (browser, variant, converted) in enumerate(TRAFFIC):
        event = assignment(browser=browser)
        event.update(visitor_id=f"v{number}", variant_id=variant, event_id=f"e{number}")
        command = plan(event)
        assert command["k"] == "a", command
        state: VisitorState = {
            "visitor_id": command["u"],
            "variant": command["v"],
            "entry_ms": command["ts"],
            "cell": command["c"],
            "goals": {"buy": [{"t": command["ts"] + 60_000}]} if converted else {},
        }
        if "ctx" in command:
            state["context"] = orjson.loads(command["ctx"])
        states.append(state)
    return states


def cell_table(states: list[VisitorState]) -> CellTable:
    """The counters the sink would write for these visitors (visitors, visits, buy)."""
    cells: dict[CellKey, Counter[str]] = {}
    for state in states:
        cell = state["cell"]
        assert isinstance(cell, str)
        key = CellKey(state["variant"], state["entry_ms"] // HOUR_MS, SegmentCell.parse(cell))
        counts = cells.setdefault(key, Counter())
        counts.update({"n": 1, "visits": 1})
        if state.get("goals"):
            counts.update({"g:buy:cv": 1, "g:buy:cvis": 1, "g:buy:ev": 1, "g:buy:ev2": 1})
    return CellTable.from_counters({key: dict(counts) for key, counts in cells.items()})


def expected(keep: Any) -> dict[str, tuple[int, int]]:
    """Plain counts over TRAFFIC: variant -> (visitors, conversions) of the kept rows."""
    totals = {"0": [0, 0], "1": [0, 0]}
    for browser, variant, converted in TRAFFIC:
        if keep(browser):
            totals[variant][0] += 1
            totals[variant][1] += int(converted)
    return {variant: (visitors, conversions) for variant, (visitors, conversions) in totals.items()}


def got(totals: Any) -> dict[str, tuple[int, int]]:
    return {row.variant_id: (row.visitors, row.conversions) for row in totals}


STATES = visitor_states()
TABLE = VisitorTable.build("exp-e", STATES)
CELLS = cell_table(STATES)
VARIANTS = ["0", "1"]


def both_paths(query: ResultQuery) -> tuple[Any, Any]:
    return (
        aggregate_cells(CELLS, query, "buy", VARIANTS),
        scan_visitors(TABLE, query, "buy", VARIANTS),
    )


def equals(field: str, value: str) -> ResultQuery:
    return ResultQuery(segment=((Condition(field=field, operator="==", value=value),),))  # type: ignore[arg-type]


def test_nobody_is_lost() -> None:
    counters, scan = both_paths(ResultQuery())
    everyone = expected(lambda browser: True)
    assert got(counters.variants) == got(scan.variants) == everyone
    assert sum(visitors for visitors, _ in everyone.values()) == len(TRAFFIC)


def test_a_documented_browser_is_found_by_both_paths() -> None:
    query = equals("browser", "edge_chromium")
    assert plan_query(query).source == "counters"
    counters, scan = both_paths(query)
    want = expected(lambda browser: browser.lower() == "edge_chromium")
    assert got(counters.variants) == got(scan.variants) == want
    assert want == {"0": (9, 3), "1": (6, 3)}


def test_unknown_browsers_are_counted_as_other() -> None:
    counters, scan = both_paths(equals("browser", "other"))
    want = expected(lambda browser: browser.lower() not in MIDA_BROWSERS)
    assert got(counters.variants) == got(scan.variants) == want


def test_breakdown_by_browser_has_a_segment_per_documented_value() -> None:
    query = ResultQuery(breakdown="browser")
    counters, scan = both_paths(query)
    assert counters.segments is not None and scan.segments is not None
    assert (
        set(counters.segments)
        == set(scan.segments)
        == {
            "edge_chromium",
            "brave",
            "chrome",
            "other",
        }
    )
    for label in counters.segments:
        assert got(counters.segments[label]) == got(scan.segments[label])
    assert got(scan.segments["brave"]) == expected(lambda browser: browser == "brave")


def test_the_raw_text_is_there_for_scans() -> None:
    query = equals("browser_raw", "netscape navigator")
    assert plan_query(query).source == "visitors"
    scan = scan_visitors(TABLE, query, "buy", VARIANTS)
    assert got(scan.variants) == expected(lambda browser: browser == "Netscape Navigator")
    contains = ResultQuery(
        segment=((Condition(field="browser_raw", operator="contains", value="new-browser"),),)
    )
    assert got(scan_visitors(TABLE, contains, "buy", VARIANTS).variants) == expected(
        lambda browser: "new-browser" in browser
    )


def test_breakdown_by_raw_text_shows_what_producers_sent() -> None:
    scan = scan_visitors(TABLE, ResultQuery(breakdown="browser_raw"), "buy", VARIANTS)
    assert scan.segments is not None
    assert set(scan.segments) == {
        "edge_chromium",  # known values are the counted value, whatever their case
        "brave",
        "chrome",
        "other",
        "some-new-browser",
        "Netscape Navigator",
    }
    assert got(scan.segments["some-new-browser"]) == expected(
        lambda browser: browser == "some-new-browser"
    )
    assert got(scan.segments["other"]) == expected(lambda browser: browser == "other")


# ------------------------------------------------------------------- Mida's filters


def rule(criteria: str, value: Any, operator: str = "==") -> str:
    return json.dumps([[{"criteria": criteria, "operator": operator, "value": value}]])


@pytest.mark.parametrize("browser", [*MIDA_BROWSERS, "other", "Edge_Chromium", "BRAVE"])
def test_custom_filter_accepts_every_documented_browser(browser: str) -> None:
    ((condition,),) = parse_custom_filter(rule("browser", browser))
    assert (condition.field, condition.operator) == ("browser", "==")
    assert str(condition.value).lower() == browser.lower()


@pytest.mark.parametrize(
    ("criteria", "value", "operator"),
    [
        ("browser", "netscape", "=="),
        ("browser", "some-new-browser", "!="),
        ("device", "smartwatch", "=="),
        ("os", "beos", "=="),
        ("source", "tv", "!="),
        ("user_type", "vip", "=="),
        ("visitor_type", "loyal", "=="),
        ("dayofweek", 7, "=="),
        ("hourofday", "24", "=="),
        ("hourofday", "noon", "!="),
        ("browser", 3, "=="),
    ],
)
def test_a_value_outside_a_criterions_list_is_400(criteria: str, value: Any, operator: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_custom_filter(rule(criteria, value, operator))
    assert caught.value.status_code == 400
    assert caught.value.message.startswith(
        f"custom_filter group 1, rule 1: {criteria} has no value {str(value)!r} (use one of "
    )


def test_the_400_names_the_list() -> None:
    with pytest.raises(ApiError) as caught:
        result_query(ResultParams(custom_filter=rule("device", "watch")), DEFINITION)
    assert caught.value.message == (
        "custom_filter group 1, rule 1: device has no value 'watch' "
        "(use one of mobile, desktop, tablet, other)."
    )


@pytest.mark.parametrize(
    ("criteria", "value", "operator", "field", "kept"),
    [
        ("browser", "edg", "**", "browser", "edg"),  # contains: a part of a value
        ("browser", "zzz", "!*", "browser", "zzz"),
        ("dayofweek", 5, ">=", "day_of_week", 5),  # ranges are not list members
        ("dayofweek", "4", "==", "day_of_week", "4"),
        ("hourofday", 23.0, "==", "hour_of_day", "23"),
        ("user_type", "New", "==", "visitor_type", "New"),
        ("os", " iOS ", "==", "os", "ios"),  # blanks would not match: the list's spelling
        ("landing_page", "/anything", "==", "landing_page", "/anything"),  # no fixed list
    ],
)
def test_values_that_are_not_list_lookups_pass(
    criteria: str, value: Any, operator: str, field: str, kept: Any
) -> None:
    ((condition,),) = parse_custom_filter(rule(criteria, value, operator))
    assert (condition.field, condition.value) == (field, kept)


def test_breakdown_by_browser_is_a_mida_breakdown() -> None:
    assert result_query(ResultParams(breakdown_by="browser"), DEFINITION).breakdown == "browser"


# ----------------------------------------------------------------------- the CLI


def cli_args(**overrides: Any) -> argparse.Namespace:
    values: dict[str, Any] = {
        "start_date": None,
        "end_date": None,
        "tz": 0,
        "goal": None,
        "filter_by": None,
        "breakdown": None,
        "min_count": 1,
        "timeframe_days": None,
        "visits": False,
        "reference": None,
    }
    return argparse.Namespace(**(values | overrides))


def test_cli_breakdown_by_raw_text_and_a_clear_error_for_an_unknown_preset() -> None:
    assert build_query(cli_args(breakdown="browser_raw")).breakdown == "browser_raw"
    with pytest.raises(WorkerError) as caught:
        build_query(cli_args(filter_by="edge_chromium"))
    assert caught.value.exit_code == 2
    assert str(caught.value) == "invalid query: unknown filter_by preset 'edge_chromium'"
