"""Plotly figures of experiments: pure functions of DataFrames (or arrays), shared by the pages and the report.

Every chart uses the same colour per method (``core.compress.registry.method_color``), axis titles with units, and a neutral
template with transparent backgrounds, so it reads the same in a light or dark Streamlit theme and in the
offline HTML report. Frames come from ``core.tables`` (``experiments_frame``, ``per_class_frame``,
``layers_frame``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from core.compress.registry import BASELINE, METHODS, method_color, method_label
from core.formatting import plural
from core.log_axis import apply_log_axis

# Method colours and labels come from the method registry (core.compress.registry); these are the chart's own accents.
BASELINE_COLOR = method_color(BASELINE)
ALERT_COLOR = "#e45756"  # the accuracy-budget line and the pruning threshold
ACCENT_COLOR = "#f58518"  # LUT centroids over a weight histogram
GRID_LEVEL_COLOR = "#54a24b"  # the levels of a linear quantization grid
# Parts of a stored model (keys of record["size_breakdown"]), bottom to top of the stacked bar.
SIZE_PART_COLORS: dict[str, str] = {
    "indices": "#4c78a8",
    "quantized_weights": "#54a24b",
    "sparse_values": "#e45756",
    "luts": "#f58518",
    "scales": "#b279a2",
    "zero_points": "#ff9da6",
    "per_channel_scales": "#9d755d",
    "masks": "#eeca3b",
    "uncompressed": "#8c8c8c",
    "other": "#bab0ac",
}
SIZE_PART_LABELS: dict[str, str] = {
    "indices": "LUT indices",
    "quantized_weights": "quantized weights",
    "sparse_values": "non-zero weights (sparse)",
    "luts": "look-up tables",
    "scales": "scales",
    "zero_points": "zero-points",
    "per_channel_scales": "per-channel scales",
    "masks": "sparsity masks",
    "uncompressed": "uncompressed (fp16)",
    "other": "other",
}
MB = 1e6
_GRID = "rgba(128,128,128,0.22)"
_AXIS = "rgba(128,128,128,0.55)"
_FONT = "#7c8190"  # mid grey: readable on a white and on a near-black page

NEUTRAL_TEMPLATE = go.layout.Template(
    layout=go.Layout(
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        font={"family": "Source Sans Pro, Inter, Helvetica, Arial, sans-serif", "size": 13, "color": _FONT},
        colorway=[descriptor.color for descriptor in METHODS.values()],
        xaxis={"gridcolor": _GRID, "zerolinecolor": _AXIS, "linecolor": _AXIS, "ticks": "outside", "tickcolor": _AXIS,
               "automargin": True},
        yaxis={"gridcolor": _GRID, "zerolinecolor": _AXIS, "linecolor": _AXIS, "ticks": "outside", "tickcolor": _AXIS,
               "automargin": True},
        legend={"bgcolor": "rgba(0,0,0,0)", "orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0, "xanchor": "left"},
        hoverlabel={"font": {"size": 12}},
        margin={"l": 60, "r": 20, "t": 84, "b": 60},
    )
)
pio.templates["studio"] = NEUTRAL_TEMPLATE


def figure_title(text: str) -> dict:
    """Title pinned to the top-left of the figure; the legend sits below it, just above the plot area."""
    return {"text": text, "x": 0, "xanchor": "left", "xref": "paper", "y": 1.0, "yanchor": "top", "yref": "container",
            "pad": {"t": 12}, "font": {"size": 16}}


def base_figure(title: str) -> go.Figure:
    """An empty figure in the studio's neutral template with its title in the usual place."""
    fig = go.Figure()
    fig.update_layout(template=NEUTRAL_TEMPLATE, title=figure_title(title))
    return fig


def empty_figure(title: str, message: str) -> go.Figure:
    """A chart with no data: axes hidden, `message` in the middle saying what would fill it."""
    fig = base_figure(title)
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 15})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _num(value: object) -> float | None:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


# --------------------------------------------------------------------------- accuracy vs size


def pareto_frontier(points: pd.DataFrame, *, x: str, y: str) -> pd.DataFrame:
    """Rows not dominated by another (smaller-or-equal x and higher-or-equal y, one strictly), sorted by x."""
    data = points.dropna(subset=[x, y]).sort_values([x, y], ascending=[True, False]).reset_index(drop=True)
    keep, best = [], -math.inf
    for position, value in enumerate(data[y]):
        if value > best:
            keep.append(position)
            best = value
    return data.iloc[keep]


def accuracy_metric(frame: pd.DataFrame) -> tuple[str, str]:
    """Which column the y axis shows: top-1 accuracy, or agreement with the baseline when accuracy is meaningless."""
    meaningful = frame.get("accuracy_meaningful")
    if meaningful is not None and len(frame) and not meaningful.fillna(True).astype(bool).any():
        return "agreement_top1", "Top-1 agreement with the baseline (%)"
    return "accuracy_top1", "Top-1 accuracy (%)"


def accuracy_size_figure(
    frame: pd.DataFrame,
    *,
    budget_pts: float | None = None,
    highlight_ids: Iterable[int] = (),
    title: str = "Accuracy vs model size",
) -> go.Figure:
    """Scatter of every experiment (colour = method), the baseline, the Pareto frontier and an accuracy budget.

    ``budget_pts``: the allowed drop below the baseline, in accuracy points; draws the line and names the
    smallest experiment within it.
    """
    if frame.empty:
        return empty_figure(title, "No experiments yet — run one on the Compress page.")
    column, axis_title = accuracy_metric(frame)
    data = frame.copy()
    data["x_mb"] = data["size_bytes"] / MB
    data["y_pct"] = data[column] * 100
    fig = base_figure(title)

    baselines = baseline_points(data, column)
    # One evaluation set: its baseline. Several: the budget and view are drawn from the lowest baseline, and every
    # set keeps its own star (each experiment's Δ is against its own set's baseline).
    baseline = min(((b.x_mb, b.y_pct) for b in baselines), key=lambda p: p[1]) if baselines else None
    points = data.dropna(subset=["x_mb", "y_pct"])
    view_floor = _accuracy_view_floor(points, baseline_pct=baseline[1] if baseline else None, budget_pts=budget_pts)
    highlight = {int(i) for i in highlight_ids}
    for method, group in points.groupby("method", sort=False):
        fig.add_trace(_method_scatter(str(method), group, view_floor=view_floor, highlight=highlight))
    for base in baselines:
        fig.add_trace(_baseline_star(base, several=len(baselines) > 1))
    frontier = _pareto_line(points, baselines, view_floor=view_floor)
    if frontier is not None:
        fig.add_trace(frontier)
    if budget_pts is not None and baseline is not None:
        _draw_accuracy_budget(fig, data, points, baselines, budget_pts=budget_pts, column=column,
                              floor=baseline[1] - float(budget_pts))
    if view_floor is not None:
        hidden = int((points["y_pct"] < view_floor).sum())
        fig.add_annotation(text=f"▼ {hidden} experiment(s) more than {baseline[1] - view_floor:.0f} pts below the baseline "
                                "(shown on the bottom edge; hover for the value)",
                           xref="paper", yref="paper", x=0, y=0, xanchor="left", yanchor="bottom", showarrow=False,
                           font={"size": 11})
    budget_floor = baseline[1] - float(budget_pts) if budget_pts is not None and baseline is not None else None
    _fit_accuracy_axis(fig, [*points["y_pct"], *(b.y_pct for b in baselines)], view_floor=view_floor,
                       budget_floor=budget_floor, axis_title=axis_title)
    apply_log_axis(fig, axis="x", unit="MB", title="Model size on disk (MB, log scale)",
                   values=[*points["x_mb"], *(b.x_mb for b in baselines)])
    fig.update_layout(height=460)
    return fig


def _accuracy_view_floor(points: pd.DataFrame, *, baseline_pct: float | None, budget_pts: float | None) -> float | None:
    """The lowest accuracy the scatter shows, or None when every point fits.

    Keeps the interesting region readable: experiments far below the baseline sit on the bottom edge as ▼
    instead of stretching the axis down to them.
    """
    if baseline_pct is None:
        return None
    candidate = baseline_pct - max(3 * float(budget_pts or 0), 10.0)
    return candidate if (points["y_pct"] < candidate).any() else None


def _column_or(group: pd.DataFrame, column: str, default: object) -> pd.Series:
    """A column of the group, or a column of `default` when older records lack it."""
    return group.get(column, pd.Series(default, index=group.index))


def _method_scatter(method: str, group: pd.DataFrame, *, view_floor: float | None, highlight: set[int]) -> go.Scatter:
    """One method's experiments: highlighted ones larger, those below the view floor pinned to it as ▼."""
    below = group["y_pct"] < view_floor if view_floor is not None else pd.Series(False, index=group.index)
    return go.Scatter(
        x=group["x_mb"],
        y=group["y_pct"].where(~below, view_floor),
        mode="markers",
        name=method_label(method),
        legendgroup=method,
        marker={
            "color": method_color(method),
            "symbol": ["triangle-down" if b else "circle" for b in below],
            "size": [16 if int(i) in highlight else 11 for i in group["id"]],
            "line": {"width": [3 if int(i) in highlight else 1 for i in group["id"]], "color": "white"},
            "opacity": 0.92,
        },
        customdata=np.stack(
            [
                group["id"].astype(int),
                group["spec_summary"].fillna("").astype(str),
                _column_or(group, "accuracy_delta_pts", np.nan).astype(float),
                _column_or(group, "compression_ratio_fp16", np.nan).astype(float),
                _column_or(group, "bits_per_weight", np.nan).astype(float),
                _column_or(group, "latency_ratio", np.nan).astype(float),
                _column_or(group, "workflow", "").fillna("").astype(str),
                group["y_pct"].astype(float),
                _column_or(group, "eval_set_label", "").fillna("").astype(str),
            ],
            axis=-1,
        ),
        hovertemplate=(
            "<b>#%{customdata[0]} %{customdata[1]}</b><br>workflow: %{customdata[6]}<br>"
            "accuracy: %{customdata[7]:.2f} % (Δ %{customdata[2]:+.2f} pts vs its baseline on "
            "%{customdata[8]})<br>"
            "size: %{x:.3f} MB (%{customdata[3]:.2f}× smaller than fp16)<br>"
            "bits/weight: %{customdata[4]:.2f} · latency: %{customdata[5]:.2f}× baseline<extra></extra>"
        ),
    )


def _baseline_star(base: BaselinePoint, *, several: bool) -> go.Scatter:
    """The uncompressed model's star; named after its evaluation set when several sets are on the chart."""
    return go.Scatter(
        x=[base.x_mb],
        y=[base.y_pct],
        mode="markers+text",
        name=method_label(BASELINE) + (f" · {base.label}" if several else ""),
        text=[f"baseline · {base.label}" if several else "baseline"],
        textposition="top center",
        marker={"symbol": "star", "size": 18, "color": BASELINE_COLOR, "line": {"width": 1, "color": "white"}},
        hovertemplate=f"<b>Baseline</b> (uncompressed fp16 .mlpackage) on {base.label}<br>"
        "accuracy: %{y:.2f} %<br>size: %{x:.3f} MB<extra></extra>",
    )


def _pareto_line(
    points: pd.DataFrame, baselines: list[BaselinePoint], *, view_floor: float | None
) -> go.Scatter | None:
    """The step line through the experiments and baselines no other point beats; None with fewer than two."""
    candidates = points[["id", "x_mb", "y_pct"]].copy()
    if baselines:
        candidates = pd.concat(
            [candidates, pd.DataFrame([{"id": -1, "x_mb": b.x_mb, "y_pct": b.y_pct} for b in baselines])],
            ignore_index=True,
        )
    frontier = pareto_frontier(candidates, x="x_mb", y="y_pct")
    if len(frontier) < 2:
        return None
    return go.Scatter(
        x=frontier["x_mb"],
        y=frontier["y_pct"].clip(lower=view_floor) if view_floor is not None else frontier["y_pct"],
        mode="lines",
        name="Pareto frontier",
        line={"shape": "hv", "dash": "dot", "width": 2, "color": _AXIS},
        hoverinfo="skip",
    )


def _draw_accuracy_budget(
    fig: go.Figure,
    data: pd.DataFrame,
    points: pd.DataFrame,
    baselines: list[BaselinePoint],
    *,
    budget_pts: float,
    column: str,
    floor: float,
) -> None:
    """A budget line below each baseline, the region under the lowest one shaded, and the smallest run within it."""
    for base in baselines:  # one budget line per evaluation set, each below its own baseline
        own_floor = base.y_pct - float(budget_pts)
        fig.add_hline(
            y=own_floor,
            line={"dash": "dash", "color": ALERT_COLOR, "width": 1.5},
            annotation_text=f"budget: ≤ {plural(budget_pts, 'point')} below baseline ({own_floor:.1f} %"
            + (f", {base.label})" if len(baselines) > 1 else ")"),
            annotation_position="bottom right",
            annotation_font_color=ALERT_COLOR,
        )
    fig.add_hrect(y0=min(points["y_pct"].min(), floor) - 100, y1=floor, fillcolor=ALERT_COLOR, opacity=0.05,
                  line_width=0, layer="below")
    best = best_within_budget(data, budget_pts=budget_pts, column=column)
    if best is not None:
        fig.add_annotation(
            x=math.log10(best["x_mb"]) if best["x_mb"] > 0 else best["x_mb"],
            y=best["y_pct"],
            text=f"smallest within budget: #{int(best['id'])} {best.get('spec_summary') or ''}".rstrip(),
            showarrow=True,
            arrowhead=2,
            ax=40,
            ay=40,  # below-right: the legend and the other points crowd the space above
            font={"size": 12},
        )


def _fit_accuracy_axis(
    fig: go.Figure,
    y_values: list[float],
    *,
    view_floor: float | None,
    budget_floor: float | None,
    axis_title: str,
) -> None:
    """Accuracy axis spanning the shown points and the budget line, padded, clamped to 0–100 %."""
    if view_floor is not None:
        y_values = [max(v, view_floor) for v in y_values]
    low = min(y_values) if y_values else 0
    high = max(y_values) if y_values else 100
    if budget_floor is not None:
        low = min(low, budget_floor)
    pad = max(1.0, (high - low) * 0.08)
    fig.update_yaxes(title_text=axis_title, range=[max(0.0, low - pad), min(100.0, high + pad) + 0.5])


@dataclass(frozen=True)
class BaselinePoint:
    """The uncompressed model on one evaluation set: where its star goes on the accuracy-size scatter."""

    eval_set: str
    label: str
    x_mb: float
    y_pct: float


def baseline_points(data: pd.DataFrame, column: str) -> list[BaselinePoint]:
    """One baseline per evaluation set (``eval_set`` column; one set when the frame has none), from the newest record
    of that set that has an fp16 size and a baseline accuracy. An experiment is compared with its own set's baseline:
    a 500-image subset and the full test set give the same model different accuracies."""
    base_col = "baseline_accuracy_top1" if column == "accuracy_top1" else None
    sets = data["eval_set"] if "eval_set" in data else pd.Series("", index=data.index)
    labels = data["eval_set_label"] if "eval_set_label" in data else pd.Series("", index=data.index)
    found: dict[str, BaselinePoint] = {}
    for index in data.index[::-1]:  # newest first
        key = str(sets[index])
        if key in found:
            continue
        row = data.loc[index]
        size = _num(row.get("size_fp16_bytes"))
        acc = _num(row.get(base_col)) if base_col else 1.0  # the baseline agrees with itself
        if size and acc is not None:
            found[key] = BaselinePoint(key, str(labels[index] or "this evaluation set"), size / MB, acc * 100)
    return sorted(found.values(), key=lambda b: b.label)


def best_within_budget(frame: pd.DataFrame, *, budget_pts: float, column: str = "accuracy_top1") -> pd.Series | None:
    """The smallest experiment whose accuracy is at most ``budget_pts`` below its baseline (None if none is).

    An experiment measured on validation images (a class-balanced slice of the training pool: sweeps and searches)
    is judged by its drop there, so the pick is not chosen by the test images it is then reported on; one without
    them (a manual run) is judged by its test drop, and the page says which."""
    if frame.empty:
        return None
    data = frame.copy()
    if "x_mb" not in data:
        data["x_mb"] = data["size_bytes"] / MB
    if "y_pct" not in data:
        data["y_pct"] = data[column] * 100
    if column == "accuracy_top1":
        drop = (data["baseline_accuracy_top1"] - data["accuracy_top1"]) * 100
        if {"validation_accuracy_top1", "baseline_validation_accuracy_top1"} <= set(data.columns):
            validation = (pd.to_numeric(data["baseline_validation_accuracy_top1"], errors="coerce")
                          - pd.to_numeric(data["validation_accuracy_top1"], errors="coerce")) * 100
            drop = validation.where(validation.notna(), drop)
    else:
        drop = (1.0 - data[column]) * 100
    inside = data[(drop <= float(budget_pts) + 1e-9) & data["x_mb"].notna()]
    if inside.empty:
        return None
    return inside.sort_values(["x_mb", "y_pct"], ascending=[True, False]).iloc[0]


# --------------------------------------------------------------------------- latency


def latency_figure(frame: pd.DataFrame, *, title: str = "Latency, batch 1 (median bar, p90 whisker)") -> go.Figure:
    """Per experiment: its baseline and the compressed model, timed interleaved in the same run."""
    data = frame.dropna(subset=["latency_ms_p50"]) if "latency_ms_p50" in frame else frame.iloc[0:0]
    if data.empty:
        return empty_figure(title, "No latency measurements yet.")
    # No ratio in the labels: a bare point estimate ("0.88×") would contradict "no measurable difference"; the ratio
    # with its interval is latency_ratio_figure's.
    labels = [str(label) for label in data["label"]]
    fig = base_figure(title)
    base_p50 = data["baseline_latency_ms_p50"].astype(float)
    base_p90 = data.get("baseline_latency_ms_p90", base_p50).astype(float)
    fig.add_trace(
        go.Bar(
            x=labels,
            y=base_p50,
            name="baseline (timed beside each run)",
            marker_color=BASELINE_COLOR,
            error_y={"type": "data", "symmetric": False, "array": (base_p90 - base_p50).clip(lower=0), "arrayminus": [0] * len(data),
                     "color": _AXIS, "thickness": 1.5, "width": 5},
            hovertemplate="%{x}<br>baseline p50 %{y:.3f} ms<extra></extra>",
        )
    )
    p50 = data["latency_ms_p50"].astype(float)
    p90 = data.get("latency_ms_p90", p50).astype(float)
    from core.tables import latency_ratio_cells  # the table's wording: the interval decides

    ratio = latency_ratio_cells(data)
    notes = data.get("latency_note", pd.Series("", index=data.index)).fillna("").astype(str)
    fig.add_trace(
        go.Bar(
            x=labels,
            y=p50,
            name="compressed",
            marker_color=[method_color(m) for m in data["method"]],
            error_y={"type": "data", "symmetric": False, "array": (p90 - p50).clip(lower=0), "arrayminus": [0] * len(data),
                     "color": _AXIS, "thickness": 1.5, "width": 5},
            customdata=[[float(a), r, n] for a, r, n in zip(p90, ratio, notes, strict=True)],
            hovertemplate=(
                "%{x}<br>p50 %{y:.3f} ms · p90 %{customdata[0]:.3f} ms<br>"
                "%{customdata[1]}<br>%{customdata[2]}<extra></extra>"
            ),
        )
    )
    fig.update_layout(barmode="group", height=420, bargap=0.25 if len(data) > 2 else 0.6)
    # A noisy machine can give p90 whiskers many times the median; cap the axis so the bars stay readable.
    tallest_p50 = float(np.nanmax(np.concatenate([p50.to_numpy(), base_p50.to_numpy()])))
    tallest_p90 = float(np.nanmax(np.concatenate([p90.to_numpy(), base_p90.to_numpy()])))
    cap = 4 * tallest_p50
    if tallest_p90 > cap:
        fig.update_yaxes(range=[0, cap * 1.08])
        fig.add_annotation(text=f"some p90 whiskers run off the chart (up to {tallest_p90:.3g} ms): a noisy machine",
                           xref="paper", yref="paper", x=1, y=1, xanchor="right", yanchor="bottom", showarrow=False,
                           font={"size": 11})
    fig.update_yaxes(title_text="Latency per inference (ms)", rangemode="tozero")
    fig.update_xaxes(title_text="Experiment (each with the baseline timed beside it)", tickangle=-20)
    return fig


def latency_ratio_figure(frame: pd.DataFrame, *, title: str = "Latency vs its own baseline (95 % interval)") -> go.Figure:
    """Per experiment: compressed ÷ baseline median latency with its bootstrap interval over the interleaved pairs
    as error bars, and the line at 1.0 (no difference). An interval that crosses the line is no measurable change."""
    if "latency_ratio" not in frame:
        return empty_figure(title, "No latency measurements yet.")
    data = frame.dropna(subset=["latency_ratio"])
    if data.empty:
        return empty_figure(title, "No latency measurements yet.")
    ratio = data["latency_ratio"].astype(float)
    low = data.get("latency_ratio_low", pd.Series(np.nan, index=data.index)).astype(float)
    high = data.get("latency_ratio_high", pd.Series(np.nan, index=data.index)).astype(float)
    verdicts = [
        "no interval recorded" if not (math.isfinite(lo) and math.isfinite(hi))
        else "no measurable difference" if lo <= 1.0 <= hi
        else ("slower" if r > 1 else "faster")
        for r, lo, hi in zip(ratio, low, high, strict=True)
    ]
    fig = base_figure(title)
    fig.add_trace(
        go.Scatter(
            x=ratio, y=[str(v) for v in data["label"]], mode="markers", name="compressed ÷ baseline",
            marker={"color": [method_color(m) for m in data["method"]], "size": 12, "line": {"width": 1, "color": "white"}},
            error_x={"type": "data", "symmetric": False, "array": (high - ratio).clip(lower=0).fillna(0),
                     "arrayminus": (ratio - low).clip(lower=0).fillna(0), "color": _AXIS, "thickness": 2, "width": 6},
            customdata=[[float(lo), float(hi), v] for lo, hi, v in zip(low, high, verdicts, strict=True)],
            hovertemplate="%{y}<br>%{x:.2f}× the baseline's median<br>95 % interval %{customdata[0]:.2f}–"
                          "%{customdata[1]:.2f}×: %{customdata[2]}<extra></extra>",
        )
    )
    fig.add_vline(x=1.0, line={"dash": "dash", "color": BASELINE_COLOR, "width": 1.5},
                  annotation_text="same as baseline", annotation_position="top")
    finite = [v for v in [*ratio, *low, *high] if math.isfinite(v)] + [1.0]
    reach = max(abs(v - 1.0) for v in finite) * 1.15 + 0.05
    fig.update_xaxes(title_text="Compressed ÷ baseline median latency (× ; bars: 95 % interval)",
                     range=[max(0.0, 1.0 - reach), 1.0 + reach])
    fig.update_yaxes(title_text="", autorange="reversed", showgrid=False)
    fig.update_layout(height=max(240, 120 + 36 * len(data)), showlegend=False)
    return fig


# --------------------------------------------------------------------------- size breakdown


def size_breakdown_figure(frame: pd.DataFrame, *, title: str = "What the bytes are spent on") -> go.Figure:
    """Stacked theoretical size per part, the fp16 baseline, and the real artifact size as a marker."""
    if frame.empty:
        return empty_figure(title, "No experiments yet.")
    parts = [c.removeprefix("breakdown_") for c in frame.columns
             if c.startswith("breakdown_") and (frame[c].fillna(0) > 0).any()]  # no legend entries for empty parts
    order = [p for p in SIZE_PART_COLORS if p in parts] + [p for p in parts if p not in SIZE_PART_COLORS]
    labels = [str(v) for v in frame["label"]]
    fp16 = frame["size_fp16_bytes"].dropna()
    x = ["baseline fp16", *labels] if not fp16.empty else labels
    fig = base_figure(title)
    for part in order:
        values = frame[f"breakdown_{part}"].fillna(0.0).astype(float) / MB
        y = ([0.0] if not fp16.empty else []) + list(values)
        if part == "uncompressed" and not fp16.empty:
            y[0] = float(fp16.iloc[-1]) / MB
        fig.add_trace(
            go.Bar(
                x=x,
                y=y,
                name=SIZE_PART_LABELS.get(part, part),
                marker_color=SIZE_PART_COLORS.get(part, SIZE_PART_COLORS["other"]),
                hovertemplate="%{x}<br>" + SIZE_PART_LABELS.get(part, part) + ": %{y:.4f} MB<extra></extra>",
            )
        )
    if "uncompressed" not in order and not fp16.empty:
        fig.add_trace(
            go.Bar(x=[x[0]], y=[float(fp16.iloc[-1]) / MB], name=SIZE_PART_LABELS["uncompressed"], marker_color=SIZE_PART_COLORS["uncompressed"])
        )
    artifact = frame["size_bytes"].astype(float) / MB
    fig.add_trace(
        go.Scatter(
            x=labels,
            y=artifact,
            mode="markers",
            name="artifact on disk",
            marker={"symbol": "diamond", "size": 11, "color": "rgba(0,0,0,0)", "line": {"width": 2, "color": _FONT}},
            hovertemplate="%{x}<br>artifact on disk: %{y:.4f} MB<extra></extra>",
        )
    )
    fig.update_layout(barmode="stack", height=420)
    fig.update_yaxes(title_text="Size (MB)", rangemode="tozero")
    fig.update_xaxes(title_text="Experiment (bars: computed from the layer report; ◇: real file)", tickangle=-20)
    return fig


# --------------------------------------------------------------------------- per-class accuracy


def per_class_figure(per_class: pd.DataFrame, *, title: str = "Per-class accuracy change") -> go.Figure:
    """Heatmap experiment × class of the change in accuracy points (red: worse, blue: better)."""
    data = per_class.dropna(subset=["delta_pts"])
    if data.empty:
        return empty_figure(title, "No per-class accuracy (random-weight models have none).")
    pivot = data.pivot_table(index="label", columns="class_name", values="delta_pts", aggfunc="first", sort=False)
    classes = list(dict.fromkeys(data.sort_values("class_index")["class_name"]))
    pivot = pivot.reindex(columns=classes)
    limit = max(1.0, float(np.nanmax(np.abs(pivot.to_numpy()))))
    fig = base_figure(title)
    fig.add_trace(
        go.Heatmap(
            z=pivot.to_numpy(),
            x=classes,
            y=list(pivot.index),
            zmid=0,
            zmin=-limit,
            zmax=limit,
            colorscale="RdBu",
            text=[[f"{v:+.1f}" if np.isfinite(v) else "" for v in row] for row in pivot.to_numpy()],
            texttemplate="%{text}",
            colorbar={"title": {"text": "Δ pts"}},
            hovertemplate="%{y}<br>%{x}: %{z:+.2f} pts<extra></extra>",
        )
    )
    fig.update_layout(height=max(260, 80 + 42 * len(pivot.index)))
    fig.update_xaxes(title_text="Class", showgrid=False)
    fig.update_yaxes(title_text="", showgrid=False, autorange="reversed")
    return fig


# --------------------------------------------------------------------------- per-layer views


def weight_histogram_figure(
    *,
    original: np.ndarray,
    compressed: np.ndarray,
    layer_name: str,
    method: str | None = None,
    lut: np.ndarray | None = None,
    levels: np.ndarray | None = None,
    threshold: float | None = None,
    bins: int = 121,
    log_y: bool = False,
) -> go.Figure:
    """Overlaid histograms of a layer's original and compressed weights, with the LUT centroids, the
    quantization grid or the pruning threshold drawn on them."""
    original = np.asarray(original, dtype=np.float64).ravel()
    compressed = np.asarray(compressed, dtype=np.float64).ravel()
    title = f"Weights of {layer_name}"
    if original.size == 0:
        return empty_figure(title, "No weights stored for this layer.")
    both = np.concatenate([original, compressed]) if compressed.size else original
    low, high = float(np.min(both)), float(np.max(both))
    if high <= low:
        high = low + 1e-6
    edges = np.linspace(low, high, bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    width = float(edges[1] - edges[0])
    fig = base_figure(title)
    counts, _ = np.histogram(original, bins=edges)
    fig.add_trace(
        go.Bar(x=centers, y=counts, width=width, name="original", marker_color=BASELINE_COLOR, opacity=0.55,
               hovertemplate="original<br>%{x:.4g}: %{y} weights<extra></extra>")
    )
    if compressed.size:
        counts_c, _ = np.histogram(compressed, bins=edges)
        fig.add_trace(
            go.Bar(x=centers, y=counts_c, width=width, name="compressed", marker_color=method_color(method), opacity=0.7,
                   hovertemplate="compressed<br>%{x:.4g}: %{y} weights<extra></extra>")
        )
    if lut is not None and np.size(lut):
        centroids = np.unique(np.asarray(lut, dtype=np.float64).ravel())
        _add_value_marks(fig, centroids, name=f"LUT centroids ({centroids.size})", color=ACCENT_COLOR)
    if levels is not None and np.size(levels):
        levels = np.unique(np.asarray(levels, dtype=np.float64).ravel())
        levels = levels[(levels >= low - width) & (levels <= high + width)]
        _add_value_marks(fig, levels, name=f"quantization grid ({levels.size} levels in range)", color=GRID_LEVEL_COLOR)
    if threshold is not None and np.isfinite(threshold) and threshold > 0:
        fig.add_vrect(x0=-threshold, x1=threshold, fillcolor=ALERT_COLOR, opacity=0.1, line_width=0)
        for sign in (-1, 1):
            fig.add_vline(x=sign * threshold, line={"color": ALERT_COLOR, "dash": "dash", "width": 1.5})
        fig.add_trace(
            go.Scatter(x=[None], y=[None], mode="lines", name=f"pruning threshold |w| < {threshold:.3g}",
                       line={"color": ALERT_COLOR, "dash": "dash"})
        )
    fig.update_layout(barmode="overlay", height=420, bargap=0)
    fig.update_xaxes(title_text="Weight value")
    fig.update_yaxes(title_text="Number of weights" + (" (log scale)" if log_y else ""))
    if log_y:
        apply_log_axis(fig, axis="y")
    return fig


def _add_value_marks(fig: go.Figure, values: np.ndarray, *, name: str, color: str) -> None:
    """Vertical lines at a few values; too many to read as lines (an int8 grid) become a legend note instead."""
    if values.size <= 64:
        for value in values:
            fig.add_vline(x=float(value), line={"color": color, "width": 1, "dash": "dot"}, opacity=0.8)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=name, line={"color": color, "dash": "dot"}))
    else:
        step = float(np.median(np.diff(np.sort(values)))) if values.size > 1 else 0.0
        fig.add_trace(
            go.Scatter(x=[None], y=[None], mode="lines", name=f"{name}: step {step:.3g}, too dense to draw",
                       line={"color": color, "dash": "dot"})
        )


def coverage_figure(layers: pd.DataFrame, *, method: str | None = None, title: str = "Coverage map: every weight-bearing layer") -> go.Figure:
    """Per layer, in model order: parameters (coloured by compressed or not), stored bits per weight, weight SNR."""
    if layers.empty:
        return empty_figure(title, "This experiment has no per-layer report.")
    names = [str(n) for n in layers["name"]]
    compressed = layers["compressed"].fillna(False).astype(bool)
    colours = [method_color(method) if c else BASELINE_COLOR for c in compressed]
    reasons = layers["reason"].fillna("").astype(str).where(~compressed, "compressed")
    fig = make_subplots(
        rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
        row_heights=[0.4, 0.3, 0.3],
    )
    fig.update_layout(template=NEUTRAL_TEMPLATE, title=figure_title(title))
    fig.add_trace(
        go.Bar(
            x=names, y=layers["params"], marker_color=colours, name="parameters", showlegend=False,
            customdata=np.stack([reasons, layers["shape"].astype(str)], axis=-1),
            hovertemplate="%{x} (%{customdata[1]})<br>%{y:,} weights<br>%{customdata[0]}<extra></extra>",
        ),
        row=1, col=1,
    )
    fig.add_trace(
        go.Bar(
            x=names, y=layers["bits_per_weight"], marker_color=colours, name="bits/weight", showlegend=False,
            hovertemplate="%{x}<br>%{y:.2f} bits per weight<extra></extra>",
        ),
        row=2, col=1,
    )
    fig.add_hline(y=16, line={"dash": "dot", "color": _AXIS}, row=2, col=1, annotation_text="fp16", annotation_position="top left")
    snr = layers["snr_db"].astype(float)
    fig.add_trace(
        go.Scatter(
            x=names, y=snr, mode="markers+lines", marker={"color": colours, "size": 8}, line={"color": _AXIS, "width": 1},
            name="weight SNR", showlegend=False, connectgaps=False,
            hovertemplate="%{x}<br>weight SNR %{y:.1f} dB<extra></extra>",
        ),
        row=3, col=1,
    )
    # Legend entries for the two colours.
    fig.add_trace(go.Bar(x=[None], y=[None], marker_color=method_color(method), name="compressed"), row=1, col=1)
    fig.add_trace(go.Bar(x=[None], y=[None], marker_color=BASELINE_COLOR, name="left uncompressed (hover: why)"), row=1, col=1)
    apply_log_axis(fig, axis="y", title="Weights (log)", values=layers["params"].astype(float), row=1, col=1)
    fig.update_yaxes(title_text="Bits / weight", rangemode="tozero", row=2, col=1)
    fig.update_yaxes(title_text="Weight SNR (dB)", row=3, col=1)
    fig.update_xaxes(tickangle=-45, row=3, col=1)
    fig.update_layout(height=620, bargap=0.2)
    return fig
