"""Learn, lesson 1: scale and zero-point — the integer grid over the weight histogram, and the staircase."""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go
import streamlit as st

from core.learn import figures, handoff
from core.learn.findings import levels_finding
from core.learn.quantization import LinearSetting, engine_for, staircase
from pages._ui.learn_common import (
    LessonContext,
    Metric,
    chart,
    compute,
    fmt_db,
    fmt_small,
    histogram_of,
    intro,
    linear_of,
    metrics,
    open_in_compress,
    pick,
    toggle,
)


@dataclass(frozen=True)
class ScaleView:
    histogram: go.Figure
    staircase: go.Figure
    numbers: tuple[Metric, ...]
    levels_beyond: int  # grid levels outside the weights' min … max (drawn, but no weight rounds to them)


@st.cache_resource(max_entries=64, show_spinner=False)
def _view(key: str, layer: str, setting: LinearSetting, show_log: bool, _ctx: LessonContext) -> ScaleView:
    del key, layer  # cache key only (the context carries them)
    result = linear_of(_ctx, setting)
    counts, edges = histogram_of(_ctx)
    low, high = float(result.clip_low.ravel()[0]), float(result.clip_high.ravel()[0])
    histogram = figures.grid_histogram_figure(
        counts=counts,
        edges=edges,
        grid=result.grid(),
        clip_low=low,
        clip_high=high,
        log_y=show_log,
        title=f"Weights of {_ctx.layer_title} and the {result.levels} representable values",
    )
    x, y = staircase(result, low=float(edges[0]), high=float(edges[-1]))
    stairs = figures.staircase_figure(
        x=x, y=y, clip_low=low, clip_high=high, title="float → integer → float: the staircase"
    )
    numbers = (
        (
            "Scale",
            f"{float(result.scale.ravel()[0]):.4g}",
            "Weight units per integer step: (max − min) / (levels − 1).",
        ),
        ("Zero-point", f"{int(result.zero_point.ravel()[0])}", "The integer that stands for 0.0 (0 when symmetric)."),
        ("Rounding error", fmt_small(result.rounding_mse), "Mean squared error from weights inside the range."),
        ("Clipping error", fmt_small(result.clipping_mse), "Mean squared error from weights outside the range."),
        ("Clipped weights", f"{int(result.clipped.sum()):,}", "Weights beyond the range, saturated at the end levels."),
        ("Weight SNR", fmt_db(result.snr_db), "10·log10(Σw² / Σ(w − ŵ)²): higher is closer to the original."),
    )
    grid = result.grid()
    beyond = int(((grid < float(edges[0])) | (grid > float(edges[-1]))).sum())
    return ScaleView(histogram=histogram, staircase=stairs, numbers=numbers, levels_beyond=beyond)


@st.fragment
def render(ctx: LessonContext) -> None:
    left, right = st.columns([2, 3], gap="large")
    with left:
        intro("scale")
        bits = pick(
            st.select_slider,
            "Bits",
            "l1.bits",
            [2, 3, 4, 5, 6, 7, 8],
            4,
            help="2ⁿ integer levels. coremltools computes 4 and 8 bits (what Compress offers); torch.ao the others.",
        )
        mode = pick(
            st.radio,
            "Grid",
            "l1.mode",
            ["symmetric", "asymmetric"],
            "symmetric",
            horizontal=True,
            help="Symmetric: centred on zero. Asymmetric: a zero-point shifts the grid to the weights' range.",
        )
        range_kind = pick(
            st.radio,
            "Range",
            "l1.range",
            ["min / max", "percentile clip"],
            "min / max",
            horizontal=True,
            help="Where the grid ends: the extreme weights, or a percentile of the magnitudes.",
        )
        percentile = 100.0
        if range_kind == "percentile clip":
            percentile = pick(
                st.select_slider,
                "Keep this percentile (each tail)",
                "l1.percentile",
                [90.0, 95.0, 99.0, 99.5, 99.9, 99.99],
                99.9,
                format_func=lambda v: f"{v:g} %",
            )
        show_log = toggle("Log scale", "l1.log", False, help="Shows the rare weights in the tails.")
    setting = LinearSetting(bits=int(bits), symmetric=mode == "symmetric", clip_percentile=float(percentile))
    view = compute("Quantizing", _view, ctx.model_key, ctx.layer, setting, bool(show_log), ctx)
    if view is None:
        return
    with right:
        chart(view.histogram, "learn.l1.histogram")
        st.caption(f":material/info: {levels_finding(setting, beyond=view.levels_beyond)}")
        chart(view.staircase, "learn.l1.staircase")
    metrics(view.numbers)
    engine = engine_for(setting.bits)
    how = (
        "coremltools.optimize compute_qparams, as PostTrainingQuantizer"
        if engine == "coremltools"
        else "MinMaxObserver + fake_quantize_per_tensor_affine; coremltools offers only 4 and 8 bits"
    )
    st.caption(f"Computed by {engine} ({how}).")
    open_in_compress(handoff.from_linear(setting), key="scale")
