"""Figures of the sensitivity analysis and the mixed-precision recipe: pure functions of DataFrames.

* ``sensitivity_heatmap_figure``: layers (network order, top to bottom) × settings, coloured by output SNR (or
  top-1 change), beside a bar of each layer's share of the model's bytes. An invisible marker sits on every cell
  (customdata = [layer, setting]) so a click selects it (Plotly heatmap cells themselves are not selectable).
* ``sensitivity_table``: the probes as a readable table, most damaging first.
* ``candidate_curve_figure``: predicted size vs predicted accuracy drop (or SNR) of the greedy candidates, with
  measured runs and uniform settings drawn on the same axes.
* ``probe_histogram_figure``: one layer's weights before / after one setting (core.charts' histogram).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core import charts
from core.compress.registry import method_color
from core.measure.histogram_overlays import histogram_overlays

SNR_CAP_DB = 80.0  # colour scale ceiling: an unchanged output (infinite SNR) is drawn as this
METRICS = {
    "snr_db": "Output SNR (dB): higher = closer to the baseline",
    "top1_change": "Top-1 change (points)",
    "psnr_db": "Output PSNR (dB)",
}


def _cell_values(frame: pd.DataFrame, metric: str) -> pd.Series:
    """Colour values: top-1 change in points; SNR / PSNR clipped to [0, SNR_CAP_DB] (∞ = unchanged → the cap)."""
    values = frame[metric].astype(float)
    if metric == "top1_change":
        return values * 100.0
    return values.clip(lower=0.0, upper=SNR_CAP_DB)


def _cell_text(value: float, metric: str) -> str:
    if value is None or math.isnan(value):
        return ""
    if metric == "top1_change":
        return f"{value * 100:+.1f}"
    return "∞" if math.isinf(value) and value > 0 else f"{value:.0f}"


def sensitivity_heatmap_figure(frame: pd.DataFrame, *, metric: str = "snr_db", title: str | None = None) -> go.Figure:
    """Heatmap of one row per layer (network order) × one column per setting, and each layer's share of bytes."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}.")
    title = title or f"Per-layer sensitivity — {METRICS[metric]}"
    if frame.empty:
        return charts.empty_figure(title, "No sensitivity results yet.")
    layers = frame.drop_duplicates("layer").sort_values("order")
    layer_names = list(layers["layer"])
    settings = list(dict.fromkeys(frame["setting"]))
    labels = dict(zip(frame["setting"], frame["setting_label"], strict=False))
    x_labels = [labels[s] for s in settings]
    def grid(values: pd.Series) -> np.ndarray:
        table = frame.assign(value=values).pivot(index="layer", columns="setting", values="value")
        return table.reindex(index=layer_names, columns=settings).to_numpy(dtype=float)

    z = grid(_cell_values(frame, metric))
    text = [[_cell_text(v, metric) for v in row] for row in grid(frame[metric].astype(float))]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, column_widths=[0.78, 0.22], horizontal_spacing=0.02)
    heat = {"colorscale": "RdBu", "zmid": 0.0} if metric == "top1_change" else {"colorscale": "Viridis", "zmin": 0.0, "zmax": SNR_CAP_DB}
    fig.add_trace(go.Heatmap(
        z=z, x=x_labels, y=layer_names, text=text, texttemplate="%{text}", name=metric,
        colorbar={"title": {"text": "pts" if metric == "top1_change" else "dB"}, "x": 1.02, "len": 0.8}, **heat,
        hoverinfo="skip",  # the markers on top carry the hover text and the clicks
    ), row=1, col=1)
    xs = [labels[s] for s in settings for _ in layer_names]
    ys = [name for _ in settings for name in layer_names]
    custom = [[name, s] for s in settings for name in layer_names]
    cell_text = [text[layer_names.index(name)][settings.index(s)] for s in settings for name in layer_names]
    # transparent but present: "skip" would also swallow the click events the selection needs
    fig.add_trace(go.Scatter(
        x=xs, y=ys, customdata=custom, text=cell_text, mode="markers", name="select a cell", showlegend=False,
        marker={"symbol": "square", "size": 22, "color": "rgba(0,0,0,0)"},
        hovertemplate="%{y}<br>%{x}: %{text}<br>click for the weight histogram<extra></extra>",
    ), row=1, col=1)
    fig.add_trace(go.Bar(
        x=layers["layer_share"].astype(float) * 100.0, y=layer_names, orientation="h", name="share of model bytes",
        marker_color=charts.BASELINE_COLOR, showlegend=False,
        hovertemplate="%{y}: %{x:.1f} % of the fp16 model's bytes<extra></extra>",
    ), row=1, col=2)
    fig.update_layout(template=charts.NEUTRAL_TEMPLATE, title=charts.figure_title(title),
                      height=max(320, 120 + 28 * len(layer_names)), clickmode="event+select")
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_xaxes(title_text="setting (this layer only)", side="bottom", row=1, col=1)
    fig.update_xaxes(title_text="% of model bytes", row=1, col=2)
    return fig


def sensitivity_table(frame: pd.DataFrame, *, by: str = "snr_db") -> pd.DataFrame:
    """The probes as a table, most damaging first (lowest SNR, or largest top-1 loss)."""
    if frame.empty:
        return pd.DataFrame()
    data = frame.sort_values([by, "order"], kind="stable")
    return pd.DataFrame({
        "layer": data["layer"],
        "setting": data["setting_label"],
        "output SNR (dB)": data["snr_db"].astype(float).round(1),
        "output PSNR (dB)": data["psnr_db"].astype(float).round(1),
        "top-1 change (pts)": (data["top1_change"].astype(float) * 100).round(2),
        "agreement (%)": (data["agreement"].astype(float) * 100).round(2),
        "bits / weight": data["bits_per_weight"].astype(float).round(2),
        "layer kB": (data["layer_bytes"].astype(float) / 1e3).round(1),
        "share of model (%)": (data["layer_share"].astype(float) * 100).round(2),
        "note": data["reason"].where(~data["compressed"].astype(bool), ""),
    }).reset_index(drop=True)


def candidate_curve_figure(
    candidates: pd.DataFrame,
    *,
    measured: pd.DataFrame | None = None,
    uniform: pd.DataFrame | None = None,
    chosen_step: int | None = None,
    title: str = "Mixed-precision candidates: predicted size vs accuracy",
) -> go.Figure:
    """`candidates`: candidates_frame rows; `measured`: predicted_mb, measured_mb, predicted_y, measured_y (+ label);
    `uniform`: mb, y, label. y is the accuracy drop in points when predicted, else the output SNR."""
    if candidates.empty:
        return charts.empty_figure(title, "No candidates yet: run the sensitivity analysis first.")
    use_drop = candidates["predicted_drop_pts"].notna().any()
    y_col = "predicted_drop_pts" if use_drop else "predicted_snr_db"
    y_title = "accuracy drop (points, lower is better)" if use_drop else "output SNR (dB, higher is better)"
    fig = charts.base_figure(title)
    data = candidates.copy()
    data[y_col] = data[y_col].astype(float).replace([np.inf], np.nan)
    fig.add_trace(go.Scatter(
        x=data["predicted_mb"], y=data[y_col], mode="lines+markers", name="predicted (greedy path)",
        marker={"size": 6, "color": method_color("palettize")},
        customdata=data[["step", "layers"]], hovertemplate="step %{customdata[0]}<br>%{x:.3f} MB, %{y:.2f}<br>%{customdata[1]}<extra></extra>",
    ))
    if chosen_step is not None and (data["step"] == chosen_step).any():
        row = data[data["step"] == chosen_step].iloc[0]
        fig.add_trace(go.Scatter(x=[row["predicted_mb"]], y=[row[y_col]], mode="markers", name="chosen recipe",
                                 marker={"size": 14, "symbol": "star", "color": charts.ACCENT_COLOR}))
    if measured is not None and not measured.empty:
        for row in measured.itertuples(index=False):
            fig.add_trace(go.Scatter(x=[row.predicted_mb, row.measured_mb], y=[row.predicted_y, row.measured_y], mode="lines",
                                     line={"dash": "dot", "color": charts.ALERT_COLOR}, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=measured["measured_mb"], y=measured["measured_y"], mode="markers", name="measured (real .mlpackage)",
                                 marker={"size": 11, "symbol": "diamond", "color": charts.ALERT_COLOR}))
    if uniform is not None and not uniform.empty:
        fig.add_trace(go.Scatter(x=uniform["mb"], y=uniform["y"], mode="markers+text", text=uniform["label"], textposition="top center",
                                 name="uniform settings", marker={"size": 10, "symbol": "x", "color": charts.BASELINE_COLOR}))
    fig.update_xaxes(title_text="model size (MB)")
    fig.update_yaxes(title_text=y_title)
    return fig


def probe_histogram_figure(arrays: dict[str, np.ndarray], *, layer: str, setting_label: str, method: str, bits: float | None,
                           params: int) -> go.Figure:
    """One probe's weight histogram (original vs compressed) with its LUT / quantization levels / threshold, via core.charts."""
    title = f"{layer} — {setting_label}"
    if "original" not in arrays:
        return charts.empty_figure(title, "No stored weights for this probe (the setting left the layer unchanged).")
    overlays = histogram_overlays(arrays, bits=bits, params=params)
    return charts.weight_histogram_figure(
        original=arrays["original"], compressed=arrays.get("compressed", np.array([])), layer_name=title, method=method,
        lut=overlays.lut, levels=overlays.levels, threshold=overlays.threshold,
    )
