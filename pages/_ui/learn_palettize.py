"""Learn, lesson 3: palettization — a k-means look-up table, the index map, grouped LUTs and vector palettization."""

from __future__ import annotations

from dataclasses import dataclass, replace

import plotly.graph_objects as go
import streamlit as st

from core.learn import figures, handoff
from core.learn.findings import palette_finding
from core.learn.palettization import PaletteResult, PaletteSetting, check_fits, vector_pairs
from core.learn.quantization import LinearSetting
from core.learn.tensors import crop, crop_note, matrix_view
from pages._ui.learn_common import (
    LessonContext,
    Metric,
    chart,
    compute,
    fmt_db,
    intro,
    linear_of,
    metrics,
    open_in_compress,
    palette_of,
    pick,
    toggle,
)


@dataclass(frozen=True)
class PaletteView:
    charts: tuple[tuple[str, go.Figure], ...]  # (widget key, figure) beside the controls
    numbers: tuple[Metric, ...]
    bits: go.Figure


@st.cache_resource(max_entries=64, show_spinner=False)
def _view(key: str, layer: str, setting: PaletteSetting, lut_index: int, _ctx: LessonContext) -> PaletteView:
    del key, layer  # cache key only (the context carries them)
    weight = _ctx.weight
    result = palette_of(_ctx, setting)
    rows = slice(lut_index * result.channels_per_lut, (lut_index + 1) * result.channels_per_lut)
    values = weight[rows]
    unit = ""
    if result.channel_scale is not None:
        values = values / result.channel_scale[rows].reshape((-1,) + (1,) * (weight.ndim - 1))
        unit = " (divided by each channel's scale)"
    if setting.cluster_dim == 1:
        counts, edges = figures.histogram(values, bins=120)
        matrix, what = matrix_view(result.indices)
        charts = (
            (
                "learn.l3.histogram",
                figures.lut_histogram_figure(
                    counts=counts,
                    edges=edges,
                    lut=result.lut[lut_index],
                    log_y=False,
                    title=f"LUT {lut_index} over its weights{unit}: {setting.entries} k-means centroids",
                ),
            ),
            (
                "learn.l3.indices",
                figures.index_heatmap_figure(
                    indices=crop(matrix),
                    title=f"Index map: the {setting.n_bits}-bit index stored for each weight"
                    + crop_note(matrix, crop(matrix)),
                    x_title=what,
                ),
            ),
        )
    else:
        pairs, labels = vector_pairs(weight, result)
        charts = (
            (
                "learn.l3.pairs",
                figures.vector_scatter_figure(
                    pairs=pairs,
                    labels=labels,
                    centroids=result.lut[0],
                    title=f"Weight pairs{unit} and the {setting.entries} 2-D LUT entries ({len(pairs):,} pairs shown)",
                ),
            ),
        )
    parts = result.storage_bits()
    numbers = (
        ("Weight SNR", fmt_db(result.snr_db), "Palettized weights vs the originals."),
        (
            "Bits per weight",
            f"{result.bits_per_weight():.3f}",
            "Indices + LUTs (fp16) + per-channel scales, ÷ weights.",
        ),
        (
            "Index bits",
            f"{parts['indices'] / weight.size:.3f}",
            f"{setting.n_bits} bits per {setting.cluster_dim} weight(s).",
        ),
        (
            "LUT bits",
            f"{parts['luts'] / weight.size:.3f}",
            f"{result.n_luts} LUT(s) × {setting.entries} × {setting.cluster_dim} fp16 values.",
        ),
        ("LUTs", f"{result.n_luts:,}", "One per tensor, or one per group of output channels."),
        (
            "Entries used",
            f"{result.used_entries():,} / {result.n_luts * setting.entries:,}",
            "LUT entries at least one weight points to.",
        ),
    )
    bits = figures.bits_figure(parts=parts, weights=weight.size, title="Where this layer's bits go")
    return PaletteView(charts=charts, numbers=numbers, bits=bits)


def compare_finding(ctx: LessonContext, setting: PaletteSetting, result: PaletteResult) -> str | None:
    """The LUT against lesson 1's linear grid at the same bits, and grouped LUTs against one LUT (scalar LUTs of
    2–8 bits: the widths both lessons offer)."""
    if setting.cluster_dim != 1 or not 2 <= setting.n_bits <= 8:
        return None
    linear = linear_of(ctx, LinearSetting(bits=setting.n_bits, symmetric=True))
    single = None
    if setting.granularity == "per_grouped_channel":
        single = compute("Palettizing", palette_of, ctx, replace(setting, granularity="per_tensor"))
    return palette_finding(n_bits=setting.n_bits, snr_db=result.snr_db, linear_snr_db=linear.snr_db,
                           single_lut_snr_db=single.snr_db if single is not None else None, groups=result.n_luts)


@st.fragment
def render(ctx: LessonContext) -> None:
    weight = ctx.weight
    left, right = st.columns([2, 3], gap="large")
    channels = weight.shape[0]
    groups = [g for g in (1, 2, 4, 8, 16, 32, 64, 128) if channels % g == 0 and g < channels]
    with left:
        intro("palettize")
        vector = pick(
            st.radio,
            "Values per index (cluster_dim)",
            "l3.cluster_dim",
            [1, 2],
            1,
            horizontal=True,
            format_func={1: "1 (scalar)", 2: "2 (vector of a weight pair)"}.get,
            help="Vector palettization: one index selects a pair of weights from two neighbouring output channels.",
        )
        bit_options = [1, 2, 3, 4] if vector == 2 else [1, 2, 3, 4, 6, 8]
        n_bits = pick(st.select_slider, "Bits per index (LUT of 2ⁿ entries)", "l3.bits", bit_options, 4)
        granularity = pick(
            st.radio,
            "LUTs",
            "l3.granularity",
            ["per_tensor", "per_grouped_channel"],
            "per_tensor",
            horizontal=True,
            format_func={"per_tensor": "one per tensor", "per_grouped_channel": "one per channel group"}.get,
        )
        group = pick(
            st.select_slider,
            "Output channels per LUT",
            "l3.group",
            groups or [channels],
            16 if 16 in groups else (groups[-1] if groups else channels),
            disabled=granularity != "per_grouped_channel",
        )
        scale = toggle(
            "Per-channel scale",
            "l3.scale",
            False,
            help="Divide each output channel by its largest magnitude before clustering (one fp16 scale each).",
        )
        if vector == 2 and weight.size > 100_000:
            st.caption(":material/timer: Vector k-means on a large layer takes about half a minute the first time.")
    setting = PaletteSetting(
        n_bits=int(n_bits),
        granularity=granularity,
        group_size=int(group),
        cluster_dim=int(vector),
        per_channel_scale=bool(scale),
    )
    reason = check_fits(weight.shape, setting)
    if reason:
        st.warning(f"coremltools cannot palettize this tensor so: {reason}", icon=":material/info:")
        return
    result = compute("Palettizing", palette_of, ctx, setting)
    if result is None:
        return
    with right:
        lut_index = 0
        if result.n_luts > 1:
            lut_index = pick(
                st.select_slider, "Show the LUT of channel group", "l3.show_group", list(range(result.n_luts)), 0
            )
        view = _view(ctx.model_key, ctx.layer, setting, int(lut_index), ctx)
        for key, figure in view.charts:
            chart(figure, key)
    metrics(view.numbers)
    if finding := compare_finding(ctx, setting, result):
        st.caption(f":material/info: {finding}")
    chart(view.bits, "learn.l3.bits")
    st.caption(
        "Computed by coremltools' PostTrainingPalettizer (k-means), as the Compress page's data-free palettization."
    )
    open_in_compress(handoff.from_palette(setting), key="palettize")
