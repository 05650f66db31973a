"""Line charts as inline SVG text (pure: numbers in, markup out, no JavaScript).

One chart shape serves the results page: a value per day for each line, optionally
with a band (an interval per day) drawn behind the line, a horizontal zero rule, a
legend, and labelled axes. The SVG scales to the width of its container (its
``viewBox`` keeps the proportions), every label is placed so that it stays inside
the drawing, every point carries its values as a ``<title>`` (shown on hover), and
every label is escaped, so user-controlled names are safe.

Early days of an experiment have few visitors and intervals hundreds of percent wide;
an axis fitted to them flattens every later day into a line. A chart may therefore
be *fitted from* a later day: the axis covers that day and after, and earlier points
are drawn faded and clipped to the plot area.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

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
    if not x_labels or not lines:
        return f'<p class="empty">{escape(title)}: no data yet.</p>'
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

    parts = [
        f'<div class="scroll"><svg xmlns="http://www.w3.org/2000/svg" class="chart" '
        f'id="{escape(chart_id)}" '
        f'width="100%" viewBox="0 0 {WIDTH} {height:.0f}" role="img" '
        f'aria-label="{escape(title)}" data-y-low="{axis.low:g}" data-y-high="{axis.high:g}" '
        f'data-fit-from="{fit_from}"><title>{escape(title)}</title>',
        f'<clipPath id="{escape(chart_id)}-plot"><rect x="{frame.left:.1f}" '
        f'y="{frame.top:.1f}" width="{frame.width:.1f}" height="{frame.height:.1f}"/></clipPath>',
        f'<text x="4" y="16" class="chart-title">{escape(title)}</text>',
    ]
    parts += _legend(lines, legend, frame.left)
    parts += _y_axis(ticks, tick_labels, frame, y, y_title)
    parts += _x_axis(x_labels, frame, height, x_title)
    if zero_line and axis.low < 0 < axis.high:
        parts.append(
            f'<line x1="{frame.left:.1f}" x2="{frame.left + frame.width:.1f}" y1="{y(0):.1f}" '
            f'y2="{y(0):.1f}" stroke="#111827" stroke-width="1.2"/>'
        )
    if fit_from > 0:
        at = frame.x(fit_from)
        parts.append(
            f'<line x1="{at:.1f}" x2="{at:.1f}" y1="{frame.top:.1f}" '
            f'y2="{frame.top + frame.height:.1f}" stroke="#4b5563" stroke-dasharray="4 4"/>'
            f'<text x="{at + 4:.1f}" y="{frame.top + 14:.1f}" class="tick" '
            f'text-anchor="{"end" if at + 160 > WIDTH else "start"}">axis fitted from here</text>'
        )
    parts.append(f'<g clip-path="url(#{escape(chart_id)}-plot)">')
    for index, line in enumerate(lines):
        parts += _band(line.band, color(index), frame, y, fit_from)
    for index, line in enumerate(lines):
        parts += _series(line, color(index), frame, y, fit_from)
    parts.append("</g>")
    parts += _points(lines, x_labels, frame, y, axis, unit, fit_from, zero_line)
    parts.append("</svg></div>")
    return "".join(parts)


def _anchor(at: float, half_width: float) -> str:
    """The text-anchor that keeps a label of ``2 * half_width`` pixels inside."""
    if at - half_width < 0:
        return "start"
    if at + half_width > WIDTH:
        return "end"
    return "middle"


def _y_axis(
    ticks: Sequence[float], labels: Sequence[str], frame: Frame, y: _Scale, title: str
) -> list[str]:
    parts = [
        f'<text x="4" y="{frame.top - 10:.1f}" class="axis-title">{escape(title)}</text>'
        if title
        else ""
    ]
    for value, label in zip(ticks, labels, strict=True):
        at = y(value)
        parts.append(
            f'<line x1="{frame.left:.1f}" x2="{frame.left + frame.width:.1f}" y1="{at:.1f}" '
            f'y2="{at:.1f}" stroke="#e5e7eb"/><text x="{frame.left - 6:.1f}" y="{at + 4:.1f}" '
            f'text-anchor="end" class="tick">{escape(label)}</text>'
        )
    return parts


def _x_axis(labels: Sequence[str], frame: Frame, height: float, title: str) -> list[str]:
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
    parts = [
        f'<text x="{frame.x(i):.1f}" y="{baseline + 18:.1f}" class="tick" '
        f'text-anchor="{_anchor(frame.x(i), CHAR_WIDTH * len(labels[i]) / 2)}">'
        f"{escape(labels[i])}</text>"
        for i in shown
    ]
    if title:
        parts.append(
            f'<text x="{frame.left + frame.width / 2:.1f}" y="{height - 8:.1f}" '
            f'text-anchor="middle" class="axis-title">{escape(title)}</text>'
        )
    return parts


def _band(band: Sequence[Band], fill: str, frame: Frame, y: _Scale, fit_from: int) -> list[str]:
    """Each run of consecutive intervals as a polygon (split where the fitted days
    start, the earlier part fainter); a lone interval as an error bar."""
    parts = []
    for run in _runs(band, fit_from):
        opacity = 0.15 if run[0][0] >= fit_from else 0.15 * FADED
        if len(run) == 1:
            index, (low, high) = run[0]
            parts.append(
                f'<line x1="{frame.x(index):.1f}" x2="{frame.x(index):.1f}" y1="{y(low):.1f}" '
                f'y2="{y(high):.1f}" stroke="{fill}" stroke-width="8" '
                f'stroke-opacity="{opacity * 5 / 3:.2f}"/>'
            )
            continue
        upper = [f"{frame.x(i):.1f},{y(high):.1f}" for i, (_, high) in run]
        lower = [f"{frame.x(i):.1f},{y(low):.1f}" for i, (low, _) in reversed(run)]
        parts.append(
            f'<polygon class="band" points="{" ".join(upper + lower)}" fill="{fill}" '
            f'fill-opacity="{opacity:.3f}"/>'
        )
    return parts


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


def _series(line: Line, stroke: str, frame: Frame, y: _Scale, fit_from: int) -> list[str]:
    """The line, fainter before ``fit_from``."""
    points = [(i, frame.x(i), y(v)) for i, v in enumerate(line.values) if v is not None]
    early = [(px, py) for i, px, py in points if i <= fit_from]
    late = [(px, py) for i, px, py in points if i >= fit_from]
    parts = []
    for part, opacity in ((early, FADED), (late, 1.0)):
        if len(part) > 1 and (opacity == 1.0 or fit_from > 0):
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in part)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{stroke}" stroke-width="2" '
                f'stroke-opacity="{opacity:g}"/>'
            )
    return parts


def _points(
    lines: Sequence[Line],
    x_labels: Sequence[str],
    frame: Frame,
    y: _Scale,
    axis: Axis,
    unit: str,
    fit_from: int,
    signed: bool,
) -> list[str]:
    """A dot per value inside the axis, with its values as a hover title (signed
    for a lift)."""
    parts = []
    for index, line in enumerate(lines):
        for at, value in enumerate(line.values):
            if value is None or not axis.low <= value <= axis.high:
                continue
            band = line.band[at] if at < len(line.band) else None
            said = f"{line.label} · {x_labels[at]}: {_value_text(value, unit, signed)}"
            if band is not None:
                low, high = (_value_text(side, unit, signed) for side in band)
                said += f" (interval {low} to {high})"
            parts.append(
                f'<circle cx="{frame.x(at):.1f}" cy="{y(value):.1f}" r="4" '
                f'fill="{color(index)}" fill-opacity="{1.0 if at >= fit_from else FADED:g}">'
                f"<title>{escape(said)}</title></circle>"
            )
    return parts


def _value_text(value: float, unit: str, signed: bool) -> str:
    shown = f"{value:+,.2f}" if signed else f"{value:,.2f}".removesuffix(".00")
    return f"{shown} {unit}" if unit else shown


def _legend(
    lines: Sequence[Line], rows: Sequence[Sequence[tuple[int, float]]], left: float
) -> list[str]:
    parts = []
    for row_index, row in enumerate(rows):
        top = MARGIN_TOP + LEGEND_ROW * row_index
        for index, x in row:
            parts.append(
                f'<rect x="{left + x:.0f}" y="{top:.0f}" width="14" height="4" '
                f'fill="{color(index)}"/><text x="{left + x + 18:.0f}" y="{top + 6:.0f}" '
                f'class="legend">{escape(lines[index].label)}</text>'
            )
    return parts


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
        return f'<p class="empty">{escape(title)}: no data yet.</p>'
    axis = y_axis([Line("", points)], zero_line=True)
    ticks = [
        axis.low + tick * axis.step for tick in range(round((axis.high - axis.low) / axis.step) + 1)
    ]
    left = 16 + CHAR_WIDTH * max(len(row.label) for row in rows)
    width = WIDTH - left - MARGIN_RIGHT - 24
    top = MARGIN_TOP
    height = top + ROW_HEIGHT * len(rows) + 36

    def x(value: float) -> float:
        return left + width * (value - axis.low) / (axis.high - axis.low)

    parts = [
        f'<div class="scroll"><svg xmlns="http://www.w3.org/2000/svg" class="chart" '
        f'id="{escape(chart_id)}" '
        f'width="100%" viewBox="0 0 {WIDTH} {height:.0f}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
        f'<text x="4" y="16" class="chart-title">{escape(title)}</text>',
    ]
    bottom = top + ROW_HEIGHT * len(rows)
    for value in ticks:
        parts.append(
            f'<line x1="{x(value):.1f}" x2="{x(value):.1f}" y1="{top:.1f}" y2="{bottom:.1f}" '
            f'stroke="{"#111827" if value == 0 else "#e5e7eb"}"/>'
            f'<text x="{x(value):.1f}" y="{bottom + 16:.1f}" text-anchor="middle" '
            f'class="tick">{escape(tick_text(value, axis.step, "%"))}</text>'
        )
    for index, row in enumerate(rows):
        middle = top + ROW_HEIGHT * index + ROW_HEIGHT / 2
        heading = row.value is None and row.band is None
        parts.append(
            f'<text x="4" y="{middle + 4:.1f}" class="{"legend heading" if heading else "tick"}"'
            f">{escape(row.label)}</text>"
        )
        fill = TONE_COLORS.get(row.tone, TONE_COLORS["neutral"])
        hover = f"<title>{escape(row.said)}</title>" if row.said else ""
        if row.band is not None:
            parts.append(
                f'<line x1="{x(row.band[0]):.1f}" x2="{x(row.band[1]):.1f}" y1="{middle:.1f}" '
                f'y2="{middle:.1f}" stroke="{fill}" stroke-width="6" stroke-opacity="0.45">'
                f"{hover}</line>"
            )
        if row.value is not None:
            parts.append(
                f'<circle cx="{x(row.value):.1f}" cy="{middle:.1f}" r="6" fill="{fill}" '
                f'data-tone="{escape(row.tone)}">{hover}</circle>'
            )
    parts.append(
        f'<text x="{left + width / 2:.1f}" y="{height - 4:.0f}" text-anchor="middle" '
        'class="axis-title">Relative lift against the control, % of its value</text></svg></div>'
    )
    return "".join(parts)
