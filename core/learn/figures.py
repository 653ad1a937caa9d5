"""The lessons' Plotly figures: pure functions of arrays, small enough to re-draw on every slider move.

Large tensors are summarised before they reach a figure (a histogram, a cropped heatmap, a seeded sample),
so a figure of a 590k-weight layer carries a few kilobytes of JSON, not megabytes.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import plotly.graph_objects as go

from core.log_axis import apply_log_axis, bytes_label

ORIGINAL = "#8c8c8c"
QUANT = "#54a24b"
PALETTE = "#4c78a8"
PRUNE = "#e45756"
ACCENT = "#f58518"
GRANULARITY_COLORS = {"per_tensor": "#8c8c8c", "per_channel": "#54a24b", "per_block": "#4c78a8"}
GRANULARITY_LABELS = {"per_tensor": "per tensor", "per_channel": "per channel", "per_block": "per block"}
_FONT = "#7c8190"
_GRID = "rgba(128,128,128,0.22)"
HEIGHT = 340
# Plotly never wraps a title: a long one runs off a lesson's narrow column. Lines of at most this many characters
# fit a column of two fifths of the page at the title's 15 px font.
TITLE_LINE_CHARS = 48
TITLE_LINE_PX = 20


def wrap_title(title: str, width: int = TITLE_LINE_CHARS) -> list[str]:
    """A figure title broken into lines of at most `width` characters (words kept whole)."""
    return textwrap.wrap(title, width=width, break_long_words=False) or [""]


def _figure(title: str, *, x: str, y: str, height: int = HEIGHT) -> go.Figure:
    lines = wrap_title(title)
    fig = go.Figure()
    fig.update_layout(
        title={"text": "<br>".join(lines), "x": 0.0, "xanchor": "left", "font": {"size": 15}, "y": 0.98,
               "yanchor": "top", "yref": "container"},
        height=height + TITLE_LINE_PX * (len(lines) - 1),
        margin={"l": 10, "r": 10, "t": 26 + TITLE_LINE_PX * len(lines), "b": 60},
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        font={"color": _FONT},
        # below the plot: long titles and a legend both at the top would overlap
        legend={"orientation": "h", "yanchor": "top", "y": -0.22, "xanchor": "left", "x": 0.0},
        xaxis={"title": x, "gridcolor": _GRID, "zeroline": False},
        yaxis={"title": y, "gridcolor": _GRID, "zeroline": False},
        hovermode="closest",
    )
    return fig


def histogram(
    values: np.ndarray, *, bins: int = 120, value_range: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(counts, edges) of a tensor's values (the figures draw these instead of every weight)."""
    flat = np.asarray(values, dtype=np.float32).ravel()
    low, high = value_range if value_range is not None else (float(flat.min()), float(flat.max()))
    if high <= low:
        low, high = low - 0.5, high + 0.5
    return np.histogram(flat, bins=bins, range=(low, high))


def step_xy(counts: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A histogram as the points of one "hvh" step line: the bin centres, plus the outer two edges.

    "hvh" turns half-way between two points, and half-way between two centres is the edge between their bins,
    so the line is exactly the bars' outline; its points (where hover lands) sit in the middle of each bin.
    """
    counts = np.asarray(counts)
    edges = np.asarray(edges, dtype=float)
    centres = (edges[:-1] + edges[1:]) / 2
    x = np.concatenate([edges[:1], centres, edges[-1:]])
    y = np.concatenate([counts[:1], counts, counts[-1:]])
    return x, y


def _bin_ranges(edges: np.ndarray) -> np.ndarray:
    """(low, high) of the bin each step point stands for, for the hover text."""
    edges = np.asarray(edges, dtype=float)
    bins = np.stack([edges[:-1], edges[1:]], axis=1)
    return np.concatenate([bins[:1], bins, bins[-1:]])


def _bars(
    fig: go.Figure,
    counts: np.ndarray,
    edges: np.ndarray,
    *,
    name: str,
    color: str,
    opacity: float = 0.85,
    stack_on: np.ndarray | None = None,
    unit: str = "weights",
) -> None:
    """A histogram as ONE filled step line: one SVG path however many bins (a Bar trace draws one element per
    bar, and redrawing 120–256 of them was most of a slider move's time in the browser).

    `stack_on`: counts already drawn below (the previous trace); this trace is drawn on top of them and
    filled down to them, as a stacked bar would be; the hover still says this trace's own count.
    """
    x, own = step_xy(counts, edges)
    y = own if stack_on is None else own + step_xy(stack_on, edges)[1]
    custom = np.column_stack([_bin_ranges(edges), own])
    # on top of another trace: no outline, which would run along the lower trace's top where this one is 0
    line = {"color": color, "width": 1 if stack_on is None else 0, "shape": "hvh"}
    fig.add_trace(
        go.Scatter(
            x=x,
            y=y,
            mode="lines",
            name=name,
            line=line,
            fill="tozeroy" if stack_on is None else "tonexty",
            fillcolor=_rgba(color, opacity),
            customdata=custom,
            hovertemplate="%{customdata[0]:.4g} to %{customdata[1]:.4g}: %{customdata[2]:,} "
            + unit
            + "<extra></extra>",
        )
    )


def _rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _vlines(
    fig: go.Figure,
    xs: np.ndarray,
    *,
    top: float,
    name: str,
    color: str,
    width: float = 1.0,
    dash: str | None = None,
    max_lines: int = 600,
) -> None:
    """Many vertical lines as one trace (one shape each would make the figure slow)."""
    xs = np.asarray(xs, dtype=float).ravel()
    if xs.size > max_lines:
        xs = xs[np.linspace(0, xs.size - 1, max_lines).astype(int)]
    x = np.repeat(xs, 3).astype(object)
    y = np.tile(np.array([0.0, top, None], dtype=object), xs.size)
    x[2::3] = None
    fig.add_trace(
        go.Scatter(
            x=x, y=y, mode="lines", name=name, line={"color": color, "width": width, "dash": dash}, hoverinfo="skip"
        )
    )


def _shade_outside(fig: go.Figure, low: float, high: float, edges: np.ndarray, *, color: str = PRUNE) -> None:
    if low > edges[0]:
        fig.add_vrect(x0=float(edges[0]), x1=low, fillcolor=color, opacity=0.10, line_width=0)
    if high < edges[-1]:
        fig.add_vrect(x0=high, x1=float(edges[-1]), fillcolor=color, opacity=0.10, line_width=0)


# --------------------------------------------------------------------------- lesson 1: scale and zero-point


def grid_histogram_figure(
    *,
    counts: np.ndarray,
    edges: np.ndarray,
    grid: np.ndarray,
    clip_low: float,
    clip_high: float,
    title: str,
    log_y: bool = False,
) -> go.Figure:
    """The weight histogram with every representable value as a line (also those beyond the weights: a symmetric
    grid spends levels where a lopsided layer has no weights, and the legend's count must match the lines drawn),
    and the clipped tails shaded."""
    fig = _figure(title, x="weight value", y="weights per bin")
    _bars(fig, counts, edges, name="weights", color=ORIGINAL)
    _vlines(
        fig, grid, top=float(counts.max()) * 1.05, name=f"integer grid ({len(grid)} levels)", color=QUANT, width=0.8
    )
    _shade_outside(fig, clip_low, clip_high, edges)
    if log_y:
        apply_log_axis(fig, axis="y", values=counts)
    return fig


def staircase_figure(*, x: np.ndarray, y: np.ndarray, clip_low: float, clip_high: float, title: str) -> go.Figure:
    """float → quantized float: a staircase that follows the diagonal inside the range and goes flat outside."""
    fig = _figure(title, x="weight value", y="value after quantization")
    fig.add_trace(
        go.Scatter(
            x=[float(x[0]), float(x[-1])],
            y=[float(x[0]), float(x[-1])],
            mode="lines",
            name="no error",
            line={"color": ORIGINAL, "dash": "dot", "width": 1},
        )
    )
    fig.add_trace(
        go.Scatter(x=x, y=y, mode="lines", name="quantized", line={"color": QUANT, "width": 2, "shape": "hv"})
    )
    _shade_outside(fig, clip_low, clip_high, np.asarray([x[0], x[-1]]))
    return fig


# --------------------------------------------------------------------------- lesson 2: granularity


def scales_figure(
    *,
    per_tensor: float,
    per_channel: np.ndarray,
    per_block: np.ndarray | None,
    title: str,
    highlight: int | None = None,
) -> go.Figure:
    """The scale of every output channel as one filled step (the outlier channel, if any, as its own bar), the
    single per-tensor scale as a line,
    and each block's scale as a step over its slice of the channel, blocks in order from left to right.

    The block scales are one stepped line: a marker per block would be one SVG element each (2,048 on a
    256-channel layer in blocks of 32; so would a line broken into ticks), and redrawing those made a slider
    move take half a second.
    """
    channels = np.arange(len(per_channel))
    fig = _figure(title, x="output channel", y="scale (weight units per integer step)")
    # one filled step line, not a bar per channel: 256 SVG elements took most of a redraw (see _bars)
    x, y = step_xy(np.asarray(per_channel), np.arange(len(channels) + 1) - 0.5)
    fig.add_trace(
        go.Scatter(
            x=x,
            y=y,
            mode="lines",
            name="per channel",
            fill="tozeroy",
            line={"color": GRANULARITY_COLORS["per_channel"], "width": 1, "shape": "hvh"},
            fillcolor=_rgba(GRANULARITY_COLORS["per_channel"], 0.55),
            customdata=np.concatenate([[0], channels, [len(channels) - 1]]),
            hovertemplate="channel %{customdata}: scale %{y:.3g}<extra></extra>",
        )
    )
    if per_block is not None:
        _add_block_scales(fig, np.asarray(per_block, dtype=float).reshape(len(channels), -1))
    fig.add_trace(
        go.Scatter(
            x=[-0.5, len(channels) - 0.5],
            y=[per_tensor, per_tensor],
            mode="lines",
            name="per tensor",
            line={"color": GRANULARITY_COLORS["per_tensor"], "width": 2, "dash": "dash"},
        )
    )
    if highlight is not None:
        _add_outlier_channel(fig, channel=highlight, value=float(per_channel[highlight]), channels=len(channels))
    apply_log_axis(fig, axis="y", values=np.concatenate(
        [[per_tensor], *(np.asarray(v, dtype=float).ravel() for v in (per_channel, per_block) if v is not None)]))
    return fig


def _add_block_scales(fig: go.Figure, scales: np.ndarray) -> None:
    """Each block's scale (`scales`: channels × blocks) as one stepped line over its slice of the channel."""
    channels, blocks = np.arange(scales.shape[0]), scales.shape[1]
    # block b of channel c spans c − 0.45 + b·w … + w (w = 0.9 / blocks): inside the channel's slot,
    # so the hover's %{x:.0f} names the channel
    width = 0.9 / blocks
    starts = (channels[:, None] - 0.45 + np.arange(blocks)[None, :] * width).ravel()
    x = np.append(starts, starts[-1] + width)
    y = np.append(scales.ravel(), scales.ravel()[-1])  # the last step needs an end point
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name="per block", line_shape="hv",
                             line={"color": GRANULARITY_COLORS["per_block"], "width": 1.5},
                             hovertemplate="channel %{x:.0f}: block scale %{y:.3g}<extra></extra>"))


def _add_outlier_channel(fig: go.Figure, *, channel: int, value: float, channels: int) -> None:
    """The outlier channel's scale as its own filled step, drawn after (above) the channels' fill (a Bar would sit
    in the layer beneath it)."""
    half = max(1.0, channels / 128) / 2  # at least ~3 px wide among 256 channels
    fig.add_trace(go.Scatter(x=[channel - half, channel + half], y=[value, value], mode="lines",
                             name=f"outlier channel {channel}", fill="tozeroy", line={"color": ACCENT, "width": 1},
                             fillcolor=ACCENT, customdata=[channel, channel],
                             hovertemplate="channel %{customdata}: scale %{y:.3g}<extra></extra>"))


def channel_snr_figure(*, snr: dict[str, np.ndarray], title: str) -> go.Figure:
    """Weight SNR of each output channel for each granularity (higher is closer to the original)."""
    fig = _figure(title, x="output channel", y="weight SNR (dB)")
    for granularity, values in snr.items():
        finite = np.where(np.isfinite(values), values, np.nan)
        fig.add_trace(
            go.Scatter(
                x=np.arange(len(values)),
                y=finite,
                mode="lines+markers" if len(values) <= 64 else "lines",
                name=GRANULARITY_LABELS.get(granularity, granularity),
                line={"color": GRANULARITY_COLORS.get(granularity, ACCENT), "width": 1.5},
                marker={"size": 4},
                hovertemplate="channel %{x}: %{y:.1f} dB<extra></extra>",
            )
        )
    return fig


# --------------------------------------------------------------------------- lesson 3: palettization


def lut_histogram_figure(
    *, counts: np.ndarray, edges: np.ndarray, lut: np.ndarray, title: str, log_y: bool = False
) -> go.Figure:
    """The weight histogram with the LUT's 2ⁿ values (the k-means centroids) drawn on it."""
    fig = _figure(title, x="weight value", y="weights per bin")
    _bars(fig, counts, edges, name="weights", color=ORIGINAL)
    _vlines(
        fig,
        np.sort(lut.ravel()),
        top=float(counts.max()) * 1.05,
        name=f"LUT entries ({lut.size})",
        color=PALETTE,
        width=2,
    )
    if log_y:
        apply_log_axis(fig, axis="y", values=counts)
    return fig


def index_heatmap_figure(
    *, indices: np.ndarray, title: str, y_title: str = "output channel", x_title: str = "input channel"
) -> go.Figure:
    """The LUT index of every weight of a (cropped) weight matrix."""
    fig = _figure(title, x=x_title, y=y_title)
    fig.add_trace(
        go.Heatmap(
            z=indices,
            colorscale="Viridis",
            colorbar={"title": "index", "thickness": 12},
            hovertemplate="row %{y}, column %{x}: index %{z}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    return fig


def vector_scatter_figure(*, pairs: np.ndarray, labels: np.ndarray, centroids: np.ndarray, title: str) -> go.Figure:
    """cluster_dim 2: weight pairs as points coloured by their index, the 2-D LUT entries as crosses."""
    fig = _figure(title, x="first weight of the pair", y="second weight of the pair")
    fig.add_trace(
        go.Scattergl(
            x=pairs[:, 0],
            y=pairs[:, 1],
            mode="markers",
            name="weight pairs",
            marker={"color": labels, "colorscale": "Viridis", "size": 4, "opacity": 0.55},
            hovertemplate="(%{x:.3g}, %{y:.3g})<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=centroids[:, 0],
            y=centroids[:, 1],
            mode="markers",
            name=f"LUT entries ({len(centroids)})",
            marker={"symbol": "x", "size": 12, "color": ACCENT, "line": {"width": 2}},
        )
    )
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


# --------------------------------------------------------------------------- lesson 4: pruning


def threshold_histogram_figure(
    *,
    kept_counts: np.ndarray,
    pruned_counts: np.ndarray,
    edges: np.ndarray,
    threshold: float | None,
    title: str,
    log_y: bool = False,
) -> go.Figure:
    """The weight histogram split into kept and pruned weights; for unstructured pruning, the ±threshold."""
    fig = _figure(title, x="weight value", y="weights per bin")
    _bars(fig, kept_counts, edges, name="kept", color=ORIGINAL)
    _bars(fig, pruned_counts, edges, name="pruned (set to 0)", color=PRUNE, stack_on=kept_counts)  # stacked on kept
    fig.update_layout(legend_traceorder="normal")  # Plotly reverses the legend of stacked fills otherwise
    if threshold is not None and threshold > 0:
        top = float((kept_counts + pruned_counts).max()) * 1.05
        _vlines(
            fig,
            np.array([-threshold, threshold]),
            top=top,
            name=f"threshold ±{threshold:.3g}",
            color=PRUNE,
            width=1.5,
            dash="dash",
        )
    if log_y:
        apply_log_axis(fig, axis="y", values=np.concatenate([kept_counts, pruned_counts]))
    return fig


def mask_heatmap_figure(
    *, mask: np.ndarray, values: np.ndarray, title: str, y_title: str = "output channel", x_title: str = "input channel"
) -> go.Figure:
    """A (cropped) weight matrix: kept weights by magnitude, pruned ones blank."""
    shown = np.where(mask, np.abs(values), np.nan)
    fig = _figure(title, x=x_title, y=y_title)
    fig.add_trace(
        go.Heatmap(
            z=shown,
            colorscale="Blues",
            colorbar={"title": "|w|", "thickness": 12},
            hovertemplate="row %{y}, column %{x}: |w| %{z:.3g}<extra></extra>",
            xgap=1,
            ygap=1,
        )
    )
    fig.update_yaxes(autorange="reversed")
    return fig


def sparsity_snr_figure(
    *, curves: dict[str, tuple[np.ndarray, np.ndarray]], current: tuple[float, float] | None, title: str
) -> go.Figure:
    """Weight SNR against sparsity for each pattern, with the current setting marked."""
    fig = _figure(title, x="sparsity (fraction of zeros)", y="weight SNR (dB)")
    colors = {"unstructured": PRUNE, "block": PALETTE}
    for name, (x, y) in curves.items():
        fig.add_trace(
            go.Scatter(
                x=x, y=y, mode="lines+markers", name=name, marker={"size": 4}, line={"color": colors.get(name, ACCENT)}
            )
        )
    if current is not None and math.isfinite(current[1]):
        fig.add_trace(
            go.Scatter(
                x=[current[0]],
                y=[current[1]],
                mode="markers",
                name="this setting",
                marker={"size": 13, "color": ACCENT, "symbol": "diamond"},
            )
        )
    fig.update_xaxes(tickformat=".0%")
    return fig


# --------------------------------------------------------------------------- shared: where the bits go


def bits_figure(*, parts: dict[str, float], weights: int, title: str, reference_bits: float = 16.0) -> go.Figure:
    """Bits per weight by what they store (one stacked bar), against fp16."""
    colors = {
        "indices": PALETTE,
        "luts": ACCENT,
        "scales": "#b279a2",
        "zero_points": "#ff9da6",
        "quantized_weights": QUANT,
        "masks": "#eeca3b",
        "sparse_values": PRUNE,
    }
    fig = _figure(title, x="bits per weight", y="", height=170)
    for name, bits in parts.items():
        if bits <= 0:
            continue
        fig.add_trace(
            go.Bar(
                x=[bits / weights],
                y=["stored"],
                orientation="h",
                name=name.replace("_", " "),
                marker_color=colors.get(name, ORIGINAL),
                hovertemplate=f"{name.replace('_', ' ')}: %{{x:.3f}} bits/weight<extra></extra>",
            )
        )
    fig.add_vline(
        x=reference_bits,
        line={"color": ORIGINAL, "dash": "dot"},
        annotation_text="fp16 (16 bits)",
        annotation_position="bottom left",
    )
    fig.update_layout(barmode="stack")
    fig.update_yaxes(showticklabels=False)
    fig.update_xaxes(range=[0, reference_bits * 1.15])
    return fig


# --------------------------------------------------------------------------- lesson 5: activations

OBSERVER_COLORS = {"moving_average": QUANT, "min_max": PRUNE, "histogram": PALETTE}


def activation_histogram_figure(
    *, counts: np.ndarray, edges: np.ndarray, ranges: dict[str, tuple[float, float]], title: str, log_y: bool = True
) -> go.Figure:
    """The layer's input values over the calibration images, with each observer's quint8 range as two lines."""
    fig = _figure(title, x="activation value (the layer's input)", y="values per bin")
    _bars(fig, counts, edges, name="activations", color=ORIGINAL, unit="values")
    top = float(counts.max()) * 1.5
    for name, (low, high) in ranges.items():
        _vlines(
            fig,
            np.array([low, high]),
            top=top,
            name=name,
            color=OBSERVER_COLORS.get(name.split(" ")[0], ACCENT),
            width=2,
            dash="dash",
        )
    if log_y:
        apply_log_axis(fig, axis="y", values=counts)
    return fig


def range_settling_figure(
    *,
    counts: np.ndarray,
    highs: dict[str, np.ndarray],
    batch_max: np.ndarray,
    batch_size: int,
    current: int,
    title: str,
) -> go.Figure:
    """The top of each observer's range after N images, and every batch's own maximum (the title says whether the
    chosen observer's range settles: core.learn.findings.settling_title)."""
    fig = _figure(title, x="calibration images seen (N)", y="top of the range")
    seen = np.arange(1, len(batch_max) + 1) * batch_size
    fig.add_trace(
        go.Scatter(
            x=seen,
            y=batch_max,
            mode="markers",
            name="each batch's maximum",
            marker={"color": ORIGINAL, "size": 4, "opacity": 0.6},
        )
    )
    for name, values in highs.items():
        fig.add_trace(
            go.Scatter(
                x=counts,
                y=values,
                mode="lines+markers",
                name=name,
                line={"color": OBSERVER_COLORS.get(name.split(" ")[0], ACCENT), "width": 2},
            )
        )
    values = np.concatenate([np.asarray(batch_max, dtype=float)] + [np.asarray(v, dtype=float) for v in highs.values()])
    fig.add_trace(
        go.Scatter(
            x=[current, current],
            y=[float(np.nanmin(values)), float(np.nanmax(values))],
            mode="lines",
            name=f"N = {current}",
            line={"color": ACCENT, "dash": "dot", "width": 1.5},
        )
    )
    apply_log_axis(fig, axis="x", unit="images", values=[*np.asarray(counts, dtype=float), *seen, current])
    return fig


# --------------------------------------------------------------------------- lesson 6: fake quantization


def straight_through_figure(
    *, x: np.ndarray, forward: np.ndarray, gradient: np.ndarray, limit: float, title: str
) -> go.Figure:
    """Fake quantization's forward pass (a staircase) and the gradient the backward pass uses (1 inside, 0 outside)."""
    fig = _figure(title, x="weight value", y="value after fake quantization")
    fig.add_trace(
        go.Scatter(
            x=x, y=forward, mode="lines", name="forward: rounded", line={"color": QUANT, "width": 2, "shape": "hv"}
        )
    )
    fig.add_trace(
        go.Scatter(x=x, y=x, mode="lines", name="no rounding", line={"color": ORIGINAL, "dash": "dot", "width": 1})
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=gradient,
            mode="lines",
            name="backward: gradient used",
            yaxis="y2",
            line={"color": ACCENT, "width": 2, "shape": "hv"},
        )
    )
    fig.update_layout(
        yaxis2={
            "title": "gradient",
            "overlaying": "y",
            "side": "right",
            "range": [-0.05, 1.3],
            "showgrid": False,
            "tickvals": [0, 1],
        }
    )
    _shade_outside(fig, -limit, limit, np.asarray([x[0], x[-1]]))
    return fig


def loss_curve_figure(*, losses: np.ndarray, float_losses: np.ndarray, title: str) -> go.Figure:
    """Training loss of the fake-quantized model per step, and the float model's loss on the same batches."""
    steps = np.arange(1, len(losses) + 1)
    fig = _figure(title, x="fine-tuning step", y="cross-entropy loss")
    fig.add_trace(
        go.Scatter(
            x=steps,
            y=losses,
            mode="lines+markers",
            name="fake-quantized model",
            marker={"size": 4},
            line={"color": QUANT, "width": 2},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=steps,
            y=float_losses,
            mode="lines",
            name="float model, same batches",
            line={"color": ORIGINAL, "dash": "dash", "width": 1.5},
        )
    )
    return fig


# --------------------------------------------------------------------------- lesson 7: where the bytes go


def bytes_check_figure(*, rows: list[dict], program_bytes: int, blob_overhead_bytes: int, title: str) -> go.Figure:
    """Bytes per kind: the product's size model next to what the exported package stores, plus container overhead."""
    labels = [r["label"] for r in rows] + ["blob headers + alignment", "program + manifest"]
    theory = [r["theory_bytes"] for r in rows] + [0, 0]
    stored = [r["artifact_bytes"] for r in rows] + [blob_overhead_bytes, program_bytes]
    fig = _figure(title, x="bytes", y="", height=110 + 34 * len(labels))
    fig.add_trace(
        go.Bar(
            y=labels,
            x=theory,
            orientation="h",
            name="size model (core.measure.size)",
            marker_color=PALETTE,
            hovertemplate="%{y}: %{x:,} bytes (model)<extra></extra>",
        )
    )
    fig.add_trace(
        go.Bar(
            y=labels,
            x=stored,
            orientation="h",
            name="in the .mlpackage",
            marker_color=ACCENT,
            hovertemplate="%{y}: %{x:,} bytes (file)<extra></extra>",
        )
    )
    fig.update_layout(barmode="group")
    fig.update_yaxes(autorange="reversed")
    apply_log_axis(fig, axis="x", label=bytes_label, values=[*theory, *stored])
    return fig
