"""Log-scale axes that read like a ruler: ticks at 1-2-5 steps, each with its unit ("1 MB, 2 MB, 5 MB").

Plotly's own log ticks label the minor steps with their leading digit only ("8 9 1 2 3 4 5 6 7 8 9 10"), which reads
as a broken scale. Every log axis of the studio's figures goes through ``apply_log_axis``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import plotly.graph_objects as go

STEPS = (1.0, 2.0, 5.0)
# Beyond this many decades 1-2-5 ticks crowd each other; one tick per decade (1, 10, 100 …) reads better.
MAX_DECADES_FOR_STEPS = 3.0


def log_tick_values(low: float, high: float) -> list[float]:
    """Tick positions at 1-2-5 steps (…, 0.5, 1, 2, 5, 10, …) from the last step at or below `low` to the first at
    or above `high`, so the data sits inside the ticks; one tick per decade when the span is wider than
    ``MAX_DECADES_FOR_STEPS``."""
    if not (math.isfinite(low) and math.isfinite(high)) or low <= 0 or high <= 0:
        raise ValueError(f"a log axis needs positive, finite ends; got {low} and {high}.")
    low, high = min(low, high), max(low, high)
    steps = STEPS if math.log10(high / low) <= MAX_DECADES_FOR_STEPS else (1.0,)
    ticks: list[float] = []
    for decade in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1):
        for step in steps:
            ticks.append(float(f"{step * 10.0**decade:.12g}"))  # 0.30000000000000004 → 0.3
    below = [t for t in ticks if t <= low * (1 + 1e-9)]
    above = [t for t in ticks if t >= high * (1 - 1e-9)]
    first, last = (below[-1] if below else ticks[0]), (above[0] if above else ticks[-1])
    return [t for t in ticks if first <= t <= last]


def compact_number(value: float) -> str:
    """0.2 → '0.2', 5 → '5', 2000 → '2,000', 0.05 → '0.05': a tick's number without trailing zeros."""
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.6g}"


def tick_label(value: float, unit: str = "") -> str:
    """'2 MB', '0.5 ms', '10 images' (no unit: the bare number)."""
    return f"{compact_number(value)} {unit}".strip()


def bytes_label(value: float) -> str:
    """Bytes on a log axis: '500 B', '2 kB', '1 MB' (decimal units, like the sizes on screen)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{compact_number(value / scale)} {unit}"
    return f"{compact_number(value)} B"


def log_range(low: float, high: float, ticks: list[float]) -> list[float]:
    """The axis range (log10 units, as Plotly takes it): the data with a little room, widened to the nearest ticks
    when fewer than two ticks would show (data inside one 1-2-5 step)."""
    span = math.log10(high / low)
    pad = 0.06 * span + 0.03
    start, end = math.log10(low) - pad, math.log10(high) + pad
    if sum(start - 1e-9 <= math.log10(t) <= end + 1e-9 for t in ticks) < 2:
        start, end = min(start, math.log10(ticks[0])), max(end, math.log10(ticks[-1]))
    return [start, end]


def _axis_values(fig: go.Figure, axis: str, axis_ref: str) -> list[float]:
    """Every positive finite value the figure's traces put on one axis (``x``/``y`` of traces bound to it)."""
    values: list[float] = []
    for trace in fig.data:
        if (getattr(trace, f"{axis}axis", None) or axis) != axis_ref:
            continue
        column = getattr(trace, axis, None)
        for value in (() if column is None else column):
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(number) and number > 0:
                values.append(number)
    return values


def apply_log_axis(
    fig: go.Figure,
    *,
    axis: str = "x",
    unit: str = "",
    label: Callable[[float], str] | None = None,
    values: Iterable[float] | None = None,
    title: str | None = None,
    row: int | None = None,
    col: int | None = None,
    axis_ref: str | None = None,
) -> go.Figure:
    """Make one axis of `fig` logarithmic with 1-2-5 ticks labelled with their unit.

    `values`: the data the axis must show (default: every positive value the traces on that axis carry);
    `label`: how one tick is written (default ``tick_label(value, unit)``); `row` / `col` for subplots, whose
    traces are found by `axis_ref` ("y2" …). Returns the figure.
    """
    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y'; got {axis!r}.")
    data = [float(v) for v in values] if values is not None else _axis_values(fig, axis, axis_ref or axis)
    data = [v for v in data if math.isfinite(v) and v > 0]
    settings: dict = {"type": "log"}
    if title is not None:
        settings["title_text"] = title
    if data:
        ticks = log_tick_values(min(data), max(data))
        write = label or (lambda v: tick_label(v, unit))
        settings.update(tickmode="array", tickvals=ticks, ticktext=[write(t) for t in ticks], minor={"showgrid": False},
                        range=log_range(min(data), max(data), ticks))
    update = fig.update_xaxes if axis == "x" else fig.update_yaxes
    update(**settings, **({"row": row, "col": col} if row is not None else {}))
    return fig
