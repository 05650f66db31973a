"""The results page's chart logic (pure) and its stylesheet's text contrast."""

from __future__ import annotations

import re
from importlib import resources

from worker.api.ui.charts import (
    COLORS,
    TONE_COLORS,
    WIDTH,
    Line,
    fit_start,
    legend_rows,
    line_chart,
    tick_text,
    y_axis,
)


def test_fit_start_is_the_first_day_every_arm_has_the_minimum() -> None:
    sizes = [[35, 20], [150, 90], [260, 130], [400, 210]]
    assert fit_start(sizes, 100) == 2
    assert fit_start(sizes, 1000) == 0  # never reached: fitted to all days


def test_axis_fitted_from_a_day_ignores_the_wide_early_intervals() -> None:
    # Day one: 35 visitors, an interval from -1000 % to +2000 %; later a few percent.
    line = Line("B", [400.0, 3.0, 2.5], [(-1000.0, 2000.0), (-4.0, 9.0), (-2.0, 7.0)])
    everything = y_axis([line], zero_line=True)
    fitted = y_axis([line], zero_line=True, fit_from=1)
    assert everything.low <= -1000 and everything.high >= 2000
    assert fitted.low <= -4.0 and fitted.high >= 9.0
    assert fitted.high - fitted.low <= 2 * (9.0 - -4.0)  # one tick step of slack a side


def test_tick_text_states_the_unit_with_the_decimals_the_step_needs() -> None:
    assert tick_text(-20.0, 10.0, "%") == "−20%"
    assert tick_text(0.5, 0.1, "%") == "0.5%"
    assert tick_text(1200.0, 200.0, "") == "1,200"


def test_legend_wraps_rather_than_running_out_of_the_chart() -> None:
    rows = legend_rows(["a very long variant name indeed"] * 6, 600)
    assert len(rows) > 1
    assert all(x + 24 + 7 * 31 <= 600 for row in rows for _, x in row[1:])


def test_last_day_label_is_always_shown_and_kept_inside() -> None:
    days = [f"2026-12-{day:02d}" for day in range(1, 32)]
    svg = line_chart("t", days, [Line("A", [1.0] * len(days))])
    last = re.search(r'<text x="([\d.]+)"[^>]*text-anchor="(\w+)">2026-12-31</text>', svg)
    assert last is not None and last.group(2) == "end" and float(last.group(1)) <= WIDTH
    assert 'width="100%"' in svg and "<title>A · 2026-12-31: 1" in svg


def test_early_points_are_faded_and_clipped_to_the_plot() -> None:
    line = Line("B", [400.0, 3.0, 2.5], [(-1000.0, 2000.0), (-4.0, 9.0), (-2.0, 7.0)])
    svg = line_chart("lift", ["d1", "d2", "d3"], [Line("A", [None] * 3), line], fit_from=1)
    assert 'data-fit-from="1"' in svg and 'clip-path="url(#chart-plot)"' in svg
    assert 'stroke-opacity="0.35"' in svg  # the faded early segment
    # The band: a faint part over days 1-2 and a full one from day 2 on.
    bands = re.findall(r'<polygon class="band" points="([^"]+)"[^>]*fill-opacity="([\d.]+)"', svg)
    assert [(len(points.split()), opacity) for points, opacity in bands] == [
        (4, "0.052"),
        (4, "0.150"),
    ]


def _luminance(hex_color: str) -> float:
    channels = [int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    """The WCAG contrast ratio of two colours."""
    light, dark = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_the_contrast_formula_gives_the_known_ratios() -> None:
    # WCAG 2's extremes, and #767676, the lightest grey that passes 4.5:1 on white.
    assert contrast("#000000", "#ffffff") == 21.0
    assert contrast("#ffffff", "#ffffff") == 1.0
    assert 4.54 < contrast("#767676", "#ffffff") < 4.55
    assert contrast("#777777", "#ffffff") < 4.5


def test_every_text_colour_has_4_5_to_1_on_every_background() -> None:
    css = resources.files("worker.api.ui").joinpath("static", "page.css").read_text()
    # Every colour is a six-digit hex code, so that none escapes the check below.
    declared = re.findall(r"(?<![-\w])(?:color|fill|background):([^;}]+)", css)
    assert declared and all(re.fullmatch(r"#[0-9a-f]{6}", value) for value in declared), declared
    texts = set(re.findall(r"(?<![-\w])(?:color|fill):(#[0-9a-f]{6})", css))
    backgrounds = set(re.findall(r"background:(#[0-9a-f]{6})", css))
    # White text appears only on the blue buttons; chart text and lines sit on white.
    for text in texts - {"#ffffff"}:
        for background in backgrounds - {"#1d4ed8"}:
            assert contrast(text, background) >= 4.5, (text, background)
    assert contrast("#ffffff", "#1d4ed8") >= 4.5
    for line in (*COLORS, *TONE_COLORS.values()):
        assert contrast(line, "#ffffff") >= 4.5, line
