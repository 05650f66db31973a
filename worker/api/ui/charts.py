"""Line charts as inline SVG (pure: numbers in, markup out, no JavaScript).

One chart shape serves the results page: a value per day for each line, optionally
with a band (an interval per day) drawn behind the line, a horizontal zero rule, a
legend, and labelled axes. The SVG scales to the width of its container (its
``viewBox`` keeps the proportions), every label is placed so that it stays inside
the drawing, every point carries its values as a ``<title>`` (shown on hover), and
every label is escaped, so user-controlled names are safe: this module computes
where everything goes (a view of plain data, coordinates as text) and the templates
``line_chart.svg`` and ``interval_chart.svg`` draw it, autoescaped.

Early days of an experiment have few visitors and intervals hundreds of percent wide;
an axis fitted to them flattens every later day into a line. A chart may therefore
be *fitted from* a later day: the axis covers that day and after, and earlier points
are drawn faded and clipped to the plot area.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from worker.api.ui.templating import render_template

WIDTH = 1000
PLOT_HEIGHT = 240
MARGIN_RIGHT = 16
MARGIN_TOP = 28
MARGIN_BOTTOM = 48
LEGEND_ROW = 18
AXIS_TITLE_ROW = 16
CHAR_WIDTH = 7.0
"""Upper bound of the width of one character of the 11-12 px chart fonts, in pixels."""
MIN_X_LABEL_GAP = 16
Y_TICKS = 5
FADED = 0.35
"""Opacity of the points before the day the axis is fitted from."""
COLORS = ("#4b5563", "#2563eb", "#dc2626", "#047857", "#b45309", "#7c3aed", "#be185d")
"""Line colours in order (each at least 4.5:1 on white); the first (grey) is the
reference variant's."""

Band = tuple[float, float] | None
_Scale = Callable[[float], float]
"""A value to its pixel row."""
_Position = Callable[[int], float]
"""An x index to its pixel column."""


@dataclass(frozen=True)
class Line:
    """One series: its legend label, a value per x position (None: no value that day)
    and optionally an interval per x position drawn as a shaded band."""

    label: str
    values: Sequence[float | None]
    band: Sequence[Band] = ()


@dataclass(frozen=True)
class Axis:
    """The y axis: from ``low`` to ``high`` in ticks of ``step``."""

    low: float
    high: float
    step: float


def color(index: int) -> str:
    """The colour of the line at ``index`` (cycling through the palette)."""
    return COLORS[index % len(COLORS)]


def nice_step(span: float, ticks: int = Y_TICKS) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) giving about ``ticks`` ticks."""
    raw = span / max(ticks - 1, 1) if span > 0 else 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1.0, 2.0, 5.0, 10.0) if m * power >= raw)


def fit_start(sample_sizes: Sequence[Sequence[int]], minimum: int) -> int:
    """The first x index from which every arm has at least ``minimum`` units (the
    sizes are cumulative, one sequence of per-arm sizes per x index); 0 when no index
    has that many, so that a young experiment still gets an axis fitted to its data."""
    for index, sizes in enumerate(sample_sizes):
        if sizes and min(sizes) >= minimum:
            return index
    return 0


def y_axis(lines: Sequence[Line], zero_line: bool, fit_from: int = 0) -> Axis:
    """The y axis holding every value and band side at ``fit_from`` and after (and
    zero with ``zero_line``), on tick multiples."""
    points = [v for line in lines for v in line.values[fit_from:] if v is not None]
    points += [side for line in lines for band in line.band[fit_from:] if band for side in band]
    points += [0.0] if zero_line or not points else []
    low, high = min(points), max(points)
    if high - low < 1e-9:
        low, high = low - 1.0, high + 1.0
    step = nice_step(high - low)
    return Axis(math.floor(low / step) * step, math.ceil(high / step) * step, step)


def tick_text(value: float, step: float, unit: str) -> str:
    """A tick label with as many decimals as the step needs, and the unit."""
    digits = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    shown = f"{value:,.{digits}f}".replace("-", "−")
    return f"{shown}{unit}" if unit in ("", "%") else f"{shown} {unit}"


def legend_rows(labels: Sequence[str], width: float) -> list[list[tuple[int, float]]]:
    """The legend's entries as rows of (line index, x) that fit in ``width`` pixels."""
    rows: list[list[tuple[int, float]]] = [[]]
    left = 0.0
    for index, label in enumerate(labels):
        size = 24 + CHAR_WIDTH * len(label)
        if rows[-1] and left + size > width:
            rows.append([])
            left = 0.0
        rows[-1].append((index, left))
        left += size
    return rows


@dataclass(frozen=True)
class Frame:
    """Where the plot area lies in the drawing."""

    left: float
    top: float
    width: float
    height: float
    count: int

    def x(self, index: int) -> float:
        """The pixel column of x index ``index``."""
        if self.count == 1:
            return self.left + self.width / 2
        return self.left + self.width * index / (self.count - 1)


@dataclass(frozen=True)
class Label:
    """A text at (x, y), anchored at its start, middle or end."""

    x: str
    y: str
    text: str
    anchor: str | None = None
    """None: the SVG default, the start."""


@dataclass(frozen=True)
class Rule:
    """A straight line from (x1, y1) to (x2, y2)."""

    x1: str
    x2: str
    y1: str
    y2: str


@dataclass(frozen=True)
class BandShape:
    """One run of a line's intervals: a polygon through ``points``, or for a lone
    interval a thick bar (``bar``); ``opacity`` is the fill's (the bar's stroke's)."""

    color: str
    opacity: str
    points: str = ""
    bar: Rule | None = None


@dataclass(frozen=True)
class Dot:
    """One value: its centre, colour, opacity and hover text."""

    x: str
    y: str
    color: str
    opacity: str
    said: str


def _px(value: float) -> str:
    """A coordinate as the SVG text says it: to a tenth of a pixel."""
    return f"{value:.1f}"


def line_chart(
    title: str,
    x_labels: Sequence[str],
    lines: Sequence[Line],
    unit: str = "%",
    zero_line: bool = False,
    fit_from: int = 0,
    y_title: str = "",
    x_title: str = "",
    chart_id: str = "chart",
) -> str:
    """An SVG line chart of ``lines`` over ``x_labels`` (one value per label each),
    its y axis fitted from x index ``fit_from`` (earlier points faded)."""
    chart = (
        line_chart_view(x_labels, lines, unit, zero_line, fit_from, y_title, x_title, chart_id)
        if x_labels and lines
        else None
    )
    return render_template("line_chart.svg", {"title": title, "chart": chart})


def line_chart_view(
    x_labels: Sequence[str],
    lines: Sequence[Line],
    unit: str,
    zero_line: bool,
    fit_from: int,
    y_title: str,
    x_title: str,
    chart_id: str,
) -> dict[str, Any]:
    """Where each part of a line chart goes (``line_chart`` has the arguments; at least
    one label and one line)."""
    axis = y_axis(lines, zero_line, fit_from)
    ticks = [
        axis.low + tick * axis.step for tick in range(round((axis.high - axis.low) / axis.step) + 1)
    ]
    tick_labels = [tick_text(value, axis.step, unit) for value in ticks]
    left = 12 + CHAR_WIDTH * max(len(label) for label in tick_labels)
    legend = legend_rows([line.label for line in lines], WIDTH - left - MARGIN_RIGHT)
    top = MARGIN_TOP + LEGEND_ROW * len(legend) + (AXIS_TITLE_ROW if y_title else 0) + 8
    frame = Frame(left, top, WIDTH - left - MARGIN_RIGHT, PLOT_HEIGHT, len(x_labels))
    height = top + PLOT_HEIGHT + MARGIN_BOTTOM

    def y(value: float) -> float:
        return frame.top + frame.height * (axis.high - value) / (axis.high - axis.low)

    right = _px(frame.left + frame.width)
    zero = (
        Rule(_px(frame.left), right, _px(y(0)), _px(y(0)))
        if zero_line and axis.low < 0 < axis.high
        else None
    )
    fitted = None
    if fit_from > 0:
        at = frame.x(fit_from)
        fitted = {
            "rule": Rule(_px(at), _px(at), _px(frame.top), _px(frame.top + frame.height)),
            "label": Label(
                _px(at + 4),
                _px(frame.top + 14),
                "axis fitted from here",
                "end" if at + 160 > WIDTH else "start",
            ),
        }
    return {
        "id": chart_id,
        "width": WIDTH,
        "height": f"{height:.0f}",
        "low": f"{axis.low:g}",
        "high": f"{axis.high:g}",
        "fit_from": fit_from,
        "plot": {
            "x": _px(frame.left),
            "y": _px(frame.top),
            "width": _px(frame.width),
            "height": _px(frame.height),
        },
        "legend": _legend(lines, legend, frame.left),
        "y_title": Label("4", _px(frame.top - 10), y_title) if y_title else None,
        "y_ticks": [
            {
                "grid": Rule(_px(frame.left), right, _px(y(value)), _px(y(value))),
                "label": Label(_px(frame.left - 6), _px(y(value) + 4), label, "end"),
            }
            for value, label in zip(ticks, tick_labels, strict=True)
        ],
        "x_ticks": _x_axis(x_labels, frame),
        "x_title": (
            Label(_px(frame.left + frame.width / 2), _px(height - 8), x_title, "middle")
            if x_title
            else None
        ),
        "zero": zero,
        "fitted": fitted,
        "bands": [
            shape
            for index, line in enumerate(lines)
            for shape in _band(line.band, color(index), frame, y, fit_from)
        ],
        "series": [
            series
            for index, line in enumerate(lines)
            for series in _series(line, color(index), frame, y, fit_from)
        ],
        "dots": _points(lines, x_labels, frame, y, axis, unit, fit_from, zero_line),
    }


def _anchor(at: float, half_width: float) -> str:
    """The text-anchor that keeps a label of ``2 * half_width`` pixels inside."""
    if at - half_width < 0:
        return "start"
    if at + half_width > WIDTH:
        return "end"
    return "middle"


def _x_axis(labels: Sequence[str], frame: Frame) -> list[Label]:
    """Every n-th label (no two overlap), always the last; each kept inside."""
    # The first and last labels are anchored at their ends, so a neighbour's label must
    # clear one and a half label widths.
    widest = 1.5 * CHAR_WIDTH * max(len(label) for label in labels) + MIN_X_LABEL_GAP
    spacing = frame.width / max(len(labels) - 1, 1)
    every = max(1, math.ceil(widest / spacing))
    shown = [i for i in range(len(labels)) if i % every == 0]
    last = len(labels) - 1
    if shown[-1] != last:
        # The last day matters most: it replaces the label it would overlap.
        if shown[-1] * spacing + widest > last * spacing and len(shown) > 1:
            shown.pop()
        shown.append(last)
    baseline = frame.top + frame.height
    return [
        Label(
            _px(frame.x(i)),
            _px(baseline + 18),
            labels[i],
            _anchor(frame.x(i), CHAR_WIDTH * len(labels[i]) / 2),
        )
        for i in shown
    ]


def _band(
    band: Sequence[Band], fill: str, frame: Frame, y: _Scale, fit_from: int
) -> list[BandShape]:
    """Each run of consecutive intervals as a polygon (split where the fitted days
    start, the earlier part fainter); a lone interval as an error bar."""
    shapes = []
    for run in _runs(band, fit_from):
        opacity = 0.15 if run[0][0] >= fit_from else 0.15 * FADED
        if len(run) == 1:
            index, (low, high) = run[0]
            at = _px(frame.x(index))
            bar = Rule(at, at, _px(y(low)), _px(y(high)))
            shapes.append(BandShape(fill, f"{opacity * 5 / 3:.2f}", bar=bar))
            continue
        upper = [f"{frame.x(i):.1f},{y(high):.1f}" for i, (_, high) in run]
        lower = [f"{frame.x(i):.1f},{y(low):.1f}" for i, (low, _) in reversed(run)]
        shapes.append(BandShape(fill, f"{opacity:.3f}", " ".join(upper + lower)))
    return shapes


def _runs(band: Sequence[Band], fit_from: int) -> list[list[tuple[int, tuple[float, float]]]]:
    """Runs of consecutive bounded intervals; the run crossing ``fit_from`` is split
    there, both parts holding that day so that they join."""
    runs: list[list[tuple[int, tuple[float, float]]]] = [[]]
    for index, interval in enumerate(band):
        if interval is None:
            runs.append([])
            continue
        runs[-1].append((index, interval))
        if index == fit_from and len(runs[-1]) > 1:
            runs.append([(index, interval)])
    return [run for run in runs if run]


def _series(
    line: Line, stroke: str, frame: Frame, y: _Scale, fit_from: int
) -> list[dict[str, str]]:
    """The line as polylines (points, colour, opacity), fainter before ``fit_from``."""
    points = [(i, frame.x(i), y(v)) for i, v in enumerate(line.values) if v is not None]
    early = [(px, py) for i, px, py in points if i <= fit_from]
    late = [(px, py) for i, px, py in points if i >= fit_from]
    return [
        {
            "points": " ".join(f"{px:.1f},{py:.1f}" for px, py in part),
            "color": stroke,
            "opacity": f"{opacity:g}",
        }
        for part, opacity in ((early, FADED), (late, 1.0))
        if len(part) > 1 and (opacity == 1.0 or fit_from > 0)
    ]


def _points(
    lines: Sequence[Line],
    x_labels: Sequence[str],
    frame: Frame,
    y: _Scale,
    axis: Axis,
    unit: str,
    fit_from: int,
    signed: bool,
) -> list[Dot]:
    """A dot per value inside the axis, with its values as a hover title (signed
    for a lift)."""
    dots = []
    for index, line in enumerate(lines):
        for at, value in enumerate(line.values):
            if value is None or not axis.low <= value <= axis.high:
                continue
            band = line.band[at] if at < len(line.band) else None
            said = f"{line.label} · {x_labels[at]}: {_value_text(value, unit, signed)}"
            if band is not None:
                low, high = (_value_text(side, unit, signed) for side in band)
                said += f" (interval {low} to {high})"
            opacity = f"{1.0 if at >= fit_from else FADED:g}"
            dots.append(Dot(_px(frame.x(at)), _px(y(value)), color(index), opacity, said))
    return dots


def _value_text(value: float, unit: str, signed: bool) -> str:
    shown = f"{value:+,.2f}" if signed else f"{value:,.2f}".removesuffix(".00")
    return f"{shown} {unit}" if unit else shown


@dataclass(frozen=True)
class LegendEntry:
    """One line's swatch at (x, y) in its colour, and its label."""

    x: str
    y: str
    color: str
    label: Label


def _legend(
    lines: Sequence[Line], rows: Sequence[Sequence[tuple[int, float]]], left: float
) -> list[LegendEntry]:
    """Each line's swatch and label, row by row."""
    return [
        LegendEntry(
            f"{left + x:.0f}",
            f"{MARGIN_TOP + LEGEND_ROW * row_index:.0f}",
            color(index),
            Label(
                f"{left + x + 18:.0f}",
                f"{MARGIN_TOP + LEGEND_ROW * row_index + 6:.0f}",
                lines[index].label,
            ),
        )
        for row_index, row in enumerate(rows)
        for index, x in row
    ]


TONE_COLORS = {"good": "#047857", "bad": "#b91c1c", "neutral": "#4b5563"}
"""A verdict's tone to the colour of its point and bar (each at least 4.5:1 on white)."""
ROW_HEIGHT = 26


@dataclass(frozen=True)
class IntervalRow:
    """One row of an interval chart: a label, a point with its interval, and the tone
    of its verdict; a row without a value is a heading (a goal's name)."""

    label: str
    value: float | None = None
    band: Band = None
    tone: str = "neutral"
    said: str = ""


def interval_chart(title: str, rows: Sequence[IntervalRow], chart_id: str) -> str:
    """Rows of a lift (percent) with its interval bar on one shared axis, zero marked;
    each point's hover title is its row's ``said``."""
    points = [side for row in rows if row.band for side in row.band]
    points += [row.value for row in rows if row.value is not None]
    if not points:
        return render_template("interval_chart.svg", {"title": title, "chart": None})
    axis = y_axis([Line("", points)], zero_line=True)
    ticks = [
        axis.low + tick * axis.step for tick in range(round((axis.high - axis.low) / axis.step) + 1)
    ]
    left = 16 + CHAR_WIDTH * max(len(row.label) for row in rows)
    width = WIDTH - left - MARGIN_RIGHT - 24
    top = MARGIN_TOP
    height = top + ROW_HEIGHT * len(rows) + 36
    bottom = top + ROW_HEIGHT * len(rows)

    def x(value: float) -> float:
        return left + width * (value - axis.low) / (axis.high - axis.low)

    drawn = []
    for index, row in enumerate(rows):
        middle = top + ROW_HEIGHT * index + ROW_HEIGHT / 2
        fill = TONE_COLORS.get(row.tone, TONE_COLORS["neutral"])
        drawn.append(
            {
                "label": Label("4", _px(middle + 4), row.label),
                "heading": row.value is None and row.band is None,
                "color": fill,
                "tone": row.tone,
                "said": row.said,
                "bar": (
                    None
                    if row.band is None
                    else Rule(_px(x(row.band[0])), _px(x(row.band[1])), _px(middle), _px(middle))
                ),
                "dot": None if row.value is None else {"x": _px(x(row.value)), "y": _px(middle)},
            }
        )
    chart = {
        "id": chart_id,
        "width": WIDTH,
        "height": f"{height:.0f}",
        "ticks": [
            {
                "rule": Rule(_px(x(value)), _px(x(value)), _px(top), _px(bottom)),
                "zero": value == 0,
                "label": Label(
                    _px(x(value)), _px(bottom + 16), tick_text(value, axis.step, "%"), "middle"
                ),
            }
            for value in ticks
        ],
        "rows": drawn,
        "axis_title": Label(
            _px(left + width / 2),
            f"{height - 4:.0f}",
            "Relative lift against the control, % of its value",
            "middle",
        ),
    }
    return render_template("interval_chart.svg", {"title": title, "chart": chart})
