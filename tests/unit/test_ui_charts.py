"""The SVG line charts: well-formed, escaped, scaled to contain every value and band."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

from worker.api.ui.charts import Line, line_chart, nice_step, y_range

SVG = "{http://www.w3.org/2000/svg}"


def test_chart_is_well_formed_svg_with_escaped_labels() -> None:
    svg = line_chart(
        "Rate <b>",
        ["2026-01-01", "2026-01-02", "2026-01-03"],
        [Line("A & <script>", [1.0, 2.0, None]), Line("B", [1.5, 2.5, 3.0])],
    )
    root = ElementTree.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert "<script>" not in svg and "A &amp; &lt;script&gt;" in svg
    assert len(root.findall(f"{SVG}polyline")) == 2
    assert len(root.findall(f"{SVG}circle")) == 5  # None is no point


def test_bands_become_polygons_or_error_bars() -> None:
    svg = line_chart(
        "Lift",
        ["d1", "d2", "d3", "d4"],
        [Line("T", [1.0, 2.0, 3.0, 4.0], [(-1.0, 3.0), (0.0, 4.0), None, (2.0, 6.0)])],
        zero_line=True,
    )
    root = ElementTree.fromstring(svg)
    assert len(root.findall(f"{SVG}polygon")) == 1  # the run d1-d2
    bars = [e for e in root.findall(f"{SVG}line") if e.get("stroke-width") == "8"]
    assert len(bars) == 1  # the lone d4


def test_y_range_contains_values_bands_and_zero() -> None:
    low, high, step = y_range([Line("T", [5.0, 7.0], [(4.0, 9.5), None])], zero_line=True)
    assert low <= 0.0 and high >= 9.5 and step > 0
    assert abs(low / step - round(low / step)) < 1e-9


def test_nice_steps_are_round() -> None:
    assert nice_step(10.0) == 5.0
    assert nice_step(0.3) == 0.1
    assert nice_step(0.0) == 1.0


def test_a_single_day_and_no_data() -> None:
    root = ElementTree.fromstring(line_chart("One", ["d1"], [Line("A", [2.0])]))
    assert len(root.findall(f"{SVG}circle")) == 1
    assert "no data yet" in line_chart("Empty", [], [])
