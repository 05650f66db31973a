"""Line charts as inline SVG text (pure: numbers in, markup out, no JavaScript).

One chart shape serves the results page: a value per day for each line, optionally
with a band (an interval per day) drawn behind the line, a horizontal zero rule, a
legend, and labelled axes. Every label is escaped, so user-controlled names are safe.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 760
HEIGHT = 300
MARGIN_LEFT = 64
MARGIN_RIGHT = 16
MARGIN_TOP = 40
MARGIN_BOTTOM = 40
MAX_X_LABELS = 8
Y_TICKS = 5
COLORS = ("#4b5563", "#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777")
"""Line colours in order; the first (grey) is the reference variant's."""

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


def color(index: int) -> str:
    """The colour of the line at ``index`` (cycling through the palette)."""
    return COLORS[index % len(COLORS)]


def nice_step(span: float, ticks: int = Y_TICKS) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) giving about ``ticks`` ticks."""
    raw = span / max(ticks - 1, 1) if span > 0 else 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1.0, 2.0, 5.0, 10.0) if m * power >= raw)


def y_range(lines: Sequence[Line], zero_line: bool) -> tuple[float, float, float]:
    """(low, high, step) of the y axis: every value and band inside, on tick multiples."""
    points = [v for line in lines for v in line.values if v is not None]
    points += [side for line in lines for band in line.band if band for side in band]
    points += [0.0] if zero_line or not points else []
    low, high = min(points), max(points)
    if high - low < 1e-9:
        low, high = low - 1.0, high + 1.0
    step = nice_step(high - low)
    return math.floor(low / step) * step, math.ceil(high / step) * step, step


def line_chart(
    title: str,
    x_labels: Sequence[str],
    lines: Sequence[Line],
    unit: str = "%",
    zero_line: bool = False,
) -> str:
    """An SVG line chart of ``lines`` over ``x_labels`` (one value per label each)."""
    if not x_labels or not lines:
        return f'<p class="empty">{escape(title)}: no data yet.</p>'
    low, high, step = y_range(lines, zero_line)
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

    def x(index: int) -> float:
        if len(x_labels) == 1:
            return MARGIN_LEFT + plot_w / 2
        return MARGIN_LEFT + plot_w * index / (len(x_labels) - 1)

    def y(value: float) -> float:
        return MARGIN_TOP + plot_h * (high - value) / (high - low)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
        f'<text x="{MARGIN_LEFT}" y="16" class="chart-title">{escape(title)}</text>',
    ]
    parts += _y_axis(low, high, step, y, unit)
    parts += _x_axis(x_labels, x)
    if zero_line and low < 0 < high:
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{y(0):.1f}" '
            f'y2="{y(0):.1f}" stroke="#111827" stroke-width="1.2"/>'
        )
    for index, line in enumerate(lines):
        parts += _band(line.band, color(index), x, y)
    for index, line in enumerate(lines):
        parts += _series(line, color(index), x, y)
    parts += _legend(lines)
    parts.append("</svg>")
    return "".join(parts)


def _y_axis(low: float, high: float, step: float, y: _Scale, unit: str) -> list[str]:
    count = round((high - low) / step)
    digits = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    parts = []
    for tick in range(count + 1):
        value = low + tick * step
        at = y(value)
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{at:.1f}" y2="{at:.1f}" '
            'stroke="#e5e7eb"/>'
            f'<text x="{MARGIN_LEFT - 6}" y="{at + 4:.1f}" text-anchor="end" class="tick">'
            f"{value:.{digits}f}{escape(unit)}</text>"
        )
    return parts


def _x_axis(labels: Sequence[str], x: _Position) -> list[str]:
    every = max(1, math.ceil(len(labels) / MAX_X_LABELS))
    baseline = HEIGHT - MARGIN_BOTTOM
    return [
        f'<text x="{x(index):.1f}" y="{baseline + 18}" text-anchor="middle" class="tick">'
        f"{escape(label)}</text>"
        for index, label in enumerate(labels)
        if index % every == 0 or index == len(labels) - 1
    ]


def _band(band: Sequence[Band], fill: str, x: _Position, y: _Scale) -> list[str]:
    """Each run of consecutive intervals as a polygon; a lone interval as an error bar."""
    parts = []
    for run in _runs(band):
        if len(run) == 1:
            index, (low, high) = run[0]
            parts.append(
                f'<line x1="{x(index):.1f}" x2="{x(index):.1f}" y1="{y(low):.1f}" '
                f'y2="{y(high):.1f}" stroke="{fill}" stroke-width="8" stroke-opacity="0.25"/>'
            )
            continue
        upper = [f"{x(i):.1f},{y(high):.1f}" for i, (_, high) in run]
        lower = [f"{x(i):.1f},{y(low):.1f}" for i, (low, _) in reversed(run)]
        parts.append(
            f'<polygon points="{" ".join(upper + lower)}" fill="{fill}" fill-opacity="0.15"/>'
        )
    return parts


def _runs(band: Sequence[Band]) -> list[list[tuple[int, tuple[float, float]]]]:
    runs: list[list[tuple[int, tuple[float, float]]]] = [[]]
    for index, interval in enumerate(band):
        if interval is None:
            runs.append([])
        else:
            runs[-1].append((index, interval))
    return [run for run in runs if run]


def _series(line: Line, stroke: str, x: _Position, y: _Scale) -> list[str]:
    points = [(x(i), y(v)) for i, v in enumerate(line.values) if v is not None]
    parts = []
    if len(points) > 1:
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{stroke}" stroke-width="2"/>')
    parts += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{stroke}"/>' for px, py in points]
    return parts


def _legend(lines: Sequence[Line]) -> list[str]:
    parts = []
    left = float(MARGIN_LEFT)
    for index, line in enumerate(lines):
        label = line.label[:40]
        parts.append(
            f'<rect x="{left:.0f}" y="24" width="12" height="4" fill="{color(index)}"/>'
            f'<text x="{left + 16:.0f}" y="30" class="legend">{escape(label)}</text>'
        )
        left += 28 + 7 * len(label)
    return parts
