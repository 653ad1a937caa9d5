"""Explore's Plotly figures, pure functions of DataFrames: the sweep's Pareto scatter and the lineage map."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.charts import ALERT_COLOR, BASELINE_COLOR, MB, base_figure, empty_figure
from core.compress.registry import method_color, method_label
from core.explore.sweeps import pareto_mask
from core.log_axis import apply_log_axis

ROOT_COLOR = "#e9ecf1"  # the lineage map's model box: light, so its label stays readable in dark text

X_AXES = {
    "size": ("size_bytes", "Model size on disk", MB),
    "latency": ("latency_ms_p50", "Median latency, batch 1 (ms)", 1.0),
}


def sweep_accuracy_column(frame: pd.DataFrame) -> tuple[str, str]:
    """Top-1 accuracy, or top-1 agreement with the baseline when the model has no meaningful accuracy."""
    meaningful = frame.get("accuracy_meaningful")
    if meaningful is not None and len(meaningful.dropna()) and not meaningful.dropna().astype(bool).any():
        return "agreement_top1", "Top-1 agreement with the baseline (%)"
    return "accuracy_top1", "Top-1 accuracy (%)"


def pareto_scatter_figure(
    frame: pd.DataFrame, *, against: str = "size", baseline_accuracy: float | None = None, title: str | None = None,
) -> go.Figure:
    """Accuracy vs size (or latency) of a sweep's finished configs; the Pareto front drawn as a line, its points
    ringed. `frame` is a sweep results frame (core.explore.sweeps.sweep_results_frame) or an experiments frame."""
    if against not in X_AXES:
        raise ValueError(f"against must be one of {', '.join(X_AXES)}; got {against!r}.")
    x_column, x_title, scale = X_AXES[against]
    title = title or f"Accuracy vs {'size' if against == 'size' else 'latency'}: the Pareto front"
    column, y_title = sweep_accuracy_column(frame)
    if frame.empty or x_column not in frame or column not in frame:
        return empty_figure(title, "No finished configs yet — points appear here as jobs finish.")
    data = frame.copy()
    data["x"] = pd.to_numeric(data[x_column], errors="coerce") / scale
    data["y"] = pd.to_numeric(data[column], errors="coerce") * 100
    points = data.dropna(subset=["x", "y"])
    if points.empty:
        message = ("No latency measured in this sweep (run it with latency on)." if against == "latency"
                   else "No finished configs yet — points appear here as jobs finish.")
        return empty_figure(title, message)
    on_front = pareto_mask(points, x="x", y="y")
    floor = useful_floor(points["y"], baseline_pct=baseline_accuracy * 100 if baseline_accuracy is not None else None)
    below = points["y"] < floor if floor is not None else pd.Series(False, index=points.index)
    fig = base_figure(title)
    for method, group in points.groupby("method", sort=False):
        front, low = on_front[group.index], below[group.index]
        fig.add_trace(go.Scatter(
            x=group["x"], y=group["y"].where(~low, floor), mode="markers", name=method_label(str(method)),
            marker={"color": method_color(str(method)), "size": [14 if f else 10 for f in front],
                    "symbol": ["triangle-down" if b else "circle" for b in low],
                    "line": {"width": [2.5 if f else 0.5 for f in front], "color": [ALERT_COLOR if f else "white"
                                                                                     for f in front]}},
            customdata=np.stack([group["spec_summary"].astype(str), group.get("experiment_id", group.get("id"))
                                 .fillna(-1).astype(int).astype(str), front.map({True: "on the front",
                                                                                 False: ""}).astype(str),
                                 group["y"].astype(float)], axis=-1),
            hovertemplate=("<b>%{customdata[0]}</b> (#%{customdata[1]})<br>" + f"{x_title}: " + "%{x:.3f}<br>"
                           "accuracy: %{customdata[3]:.2f} %<br>%{customdata[2]}<extra></extra>"),
        ))
    front_points = points[on_front].sort_values("x")
    fig.add_trace(go.Scatter(x=front_points["x"], y=front_points["y"].clip(lower=floor), mode="lines",
                             name="Pareto front", line={"color": ALERT_COLOR, "dash": "dot", "width": 2},
                             hoverinfo="skip"))
    if baseline_accuracy is not None:
        fig.add_hline(y=baseline_accuracy * 100, line={"color": BASELINE_COLOR, "dash": "dash"},
                      annotation_text="baseline", annotation_position="top left")
    shown = [*points["y"].clip(lower=floor)] + ([baseline_accuracy * 100] if baseline_accuracy is not None else [])
    low_end, high_end = min(shown), max(shown)
    pad = max(0.5, (high_end - low_end) * 0.08)
    fig.update_yaxes(title_text=y_title, range=[max(0.0, low_end - pad * (2.5 if floor is not None else 1)),
                                                min(100.0, high_end + pad)])
    if floor is not None:
        fig.add_annotation(text=outlier_note(points["y"][below]), xref="paper", yref="paper", x=0, y=0,
                           xanchor="left", yanchor="bottom", showarrow=False, font={"size": 11})
    if against == "size":
        apply_log_axis(fig, axis="x", unit="MB", title=f"{x_title} (MB, log scale)", values=points["x"])
    else:
        fig.update_xaxes(title_text=x_title)
    # The legend goes under the plot: above it, a legend that wraps into rows climbs into the title.
    fig.update_layout(legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -0.28, "yanchor": "top"},
                      margin={"b": 120}, height=480)
    return fig


# Points further than this below the best one (or the baseline) would squash every useful point into a line.
USEFUL_SPAN_PTS = 15.0


def useful_floor(values: pd.Series, *, baseline_pct: float | None = None, span: float = USEFUL_SPAN_PTS) -> float | None:
    """The lowest accuracy (%) the y axis shows: `span` points below the best point (or the baseline), when some
    point lies lower; None when every point fits."""
    if values.empty:
        return None
    top = max(float(values.max()), baseline_pct if baseline_pct is not None else -np.inf)
    floor = top - span
    return floor if (values < floor).any() else None


def outlier_note(values: pd.Series) -> str:
    """'▼ 1 point below: 10.0 %' — the points drawn on the bottom edge, with their real values."""
    shown = ", ".join(f"{v:.1f} %" for v in sorted(values)[:4]) + (" …" if len(values) > 4 else "")
    return f"▼ {len(values)} point{'s' if len(values) != 1 else ''} below the axis: {shown} (drawn on the bottom edge)"


def lineage_frame(records: Sequence[dict]) -> pd.DataFrame:
    """One row per experiment with where it came from: origin kind, origin id/label and parent experiment."""
    rows = []
    for record in records:
        origin = record.get("origin") or {}
        kind = origin.get("kind") or "manual"
        rows.append({
            "id": record.get("id"), "spec_summary": record.get("spec_summary") or record.get("method"),
            "method": record.get("method"), "origin_kind": kind, "origin_id": origin.get("id"),
            "origin_label": origin.get("label") or (kind if origin.get("id") is None else f"{kind} #{origin['id']}"),
            "parent_experiment_id": origin.get("parent_experiment_id"),
            "accuracy_top1": record.get("accuracy_top1"), "size_bytes": record.get("size_bytes"),
        })
    return pd.DataFrame(rows, columns=["id", "spec_summary", "method", "origin_kind", "origin_id", "origin_label",
                                       "parent_experiment_id", "accuracy_top1", "size_bytes"])


def lineage_table(lineage: pd.DataFrame) -> pd.DataFrame:
    """``lineage_frame`` as a page shows it: plain headers, accuracy and size with their units, "—" for an
    experiment that refines none."""
    from core.formatting import fmt_bytes, fmt_pct
    from core.tables import readable_table

    return readable_table(
        lineage.drop(columns=["origin_id", "method"]),
        formats={"accuracy_top1": fmt_pct, "size_bytes": fmt_bytes, "parent_experiment_id": lambda v: f"#{int(v)}",
                 "id": lambda v: f"#{int(v)}"},
        missing={"parent_experiment_id": "—", "accuracy_top1": "not measured", "size_bytes": "n/a"},
    )


def lineage_figure(lineage: pd.DataFrame, *, model_label: str = "baseline",
                   title: str = "Model map: where each experiment came from") -> go.Figure:
    """A tree: the baseline → origins (manual runs, each sweep / sensitivity / recipe / search) → experiments;
    an experiment with a parent experiment hangs under that parent instead. Pure function of lineage_frame."""
    if lineage.empty:
        return empty_figure(title, "No experiments yet.")
    ids, labels, parents, colors, hovers = ["root"], [model_label], [""], [ROOT_COLOR], [model_label]
    values = [0]  # an experiment weighs 1, so a group's box is as large as the number of experiments in it
    known = {int(i) for i in lineage["id"].dropna()}
    for label, group in lineage.groupby("origin_label", sort=False):
        node = f"origin:{label}"
        ids.append(node)
        labels.append(str(label))
        parents.append("root")
        colors.append("#b0b7c3")
        values.append(0)
        hovers.append(f"{label}: {len(group)} experiment(s)")
    for row in lineage.itertuples():
        parent = row.parent_experiment_id
        parent_node = (f"exp:{int(parent)}" if parent is not None and not pd.isna(parent) and int(parent) in known
                       else f"origin:{row.origin_label}")
        ids.append(f"exp:{int(row.id)}")
        labels.append(f"#{int(row.id)}<br>{_short(str(row.spec_summary))}")  # the full summary is in the hover
        parents.append(parent_node)
        values.append(1)
        colors.append(method_color(str(row.method)))
        accuracy = "n/a" if row.accuracy_top1 is None or pd.isna(row.accuracy_top1) else f"{row.accuracy_top1:.2%}"
        size = "n/a" if row.size_bytes is None or pd.isna(row.size_bytes) else f"{row.size_bytes / MB:.3f} MB"
        hovers.append(f"#{int(row.id)} {row.spec_summary}<br>{accuracy} · {size}<br>from {row.origin_label}")
    fig = go.Figure(go.Treemap(ids=ids, labels=labels, parents=parents, values=values, marker={"colors": colors},
                               hovertext=hovers, hoverinfo="text", branchvalues="remainder", root_color="white",
                               textfont={"size": 14}, textposition="middle center",
                               pathbar={"visible": True, "textfont": {"size": 13}}))
    # a label that does not fit its box at a readable size is hidden (hover or click the box) instead of shrunk
    fig.update_layout(title={"text": f"{title}<br><sup>Each box is one experiment; a group's box is as large as "
                             "the number of experiments in it. Click a box to zoom in.</sup>", "x": 0.0},
                      uniformtext={"minsize": 12, "mode": "hide"}, margin={"l": 8, "r": 8, "t": 64, "b": 8},
                      height=520)
    return fig


def _short(text: str, limit: int = 28) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
