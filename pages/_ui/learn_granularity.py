"""Learn, lesson 2: granularity — one scale per tensor, per output channel or per block of input channels."""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go
import streamlit as st

from core.learn import depthwise, figures, handoff
from core.learn.quantization import LinearSetting, block_sizes_for, with_outlier
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
    pick,
    toggle,
)


@dataclass(frozen=True)
class GranularityView:
    settings: dict[str, LinearSetting]  # granularity → the setting computed (per block only where blocks exist)
    scales: go.Figure
    snr: go.Figure
    numbers: tuple[Metric, ...]


@st.cache_resource(max_entries=64, show_spinner=False)
def _view(
    key: str,
    layer: str,
    bits: int,
    symmetric: bool,
    block: int,
    outlier: tuple[int, float] | None,
    with_blocks: bool,
    _ctx: LessonContext,
) -> GranularityView:
    del key, layer  # cache key only (the context carries them)
    results = {}
    for granularity in ("per_tensor", "per_channel", "per_block"):
        if granularity == "per_block" and not with_blocks:
            continue
        setting = LinearSetting(bits=bits, symmetric=symmetric, granularity=granularity, block_size=block or 32)
        results[granularity] = linear_of(_ctx, setting, outlier)
    weight = _ctx.weight
    scales = figures.scales_figure(
        per_tensor=float(results["per_tensor"].scale.ravel()[0]),
        per_channel=results["per_channel"].scale.ravel(),
        per_block=results["per_block"].scale if "per_block" in results else None,
        highlight=outlier[0] if outlier else None,
        title="The scales: one per tensor, channel or block",
    )
    source = with_outlier(weight, channel=outlier[0], factor=outlier[1]) if outlier else weight
    snr = figures.channel_snr_figure(
        snr={g: r.channel_snr_db(source) for g, r in results.items()}, title="Weight SNR of every output channel"
    )
    numbers: list[Metric] = []
    for granularity, result in results.items():
        overhead = (result.storage_bits()["scales"] + result.storage_bits()["zero_points"]) / result.codes.size
        numbers.append(
            (
                f"SNR · {granularity.removeprefix('per_')}",
                fmt_db(result.snr_db),
                f"{result.n_scales:,} scale(s): +{overhead:.3f} bits per weight for scales"
                + ("" if symmetric else " and zero-points")
                + ".",
            )
        )
    numbers += [
        (
            f"Scale cost · {g.removeprefix('per_')}",
            f"{(r.storage_bits()['scales'] + r.storage_bits()['zero_points']) / r.codes.size:.3f} b/w",
            f"{r.n_scales:,} scales × 16 bits" + ("" if symmetric else " + as many 8-bit zero-points") + ".",
        )
        for g, r in results.items()
        if g != "per_tensor"
    ]
    return GranularityView(
        settings={g: r.setting for g, r in results.items()}, scales=scales, snr=snr, numbers=tuple(numbers)
    )


@st.cache_resource(max_entries=16, show_spinner=False)
def _depthwise_notes(key: str, layer: str, _ctx: LessonContext) -> list[str]:
    del key  # cache key only
    return depthwise.lesson_notes(module=_ctx.model.module, layer=layer, manifest_entry=_ctx.model.manifest or {})


@st.fragment
def render(ctx: LessonContext) -> None:
    weight = ctx.weight
    left, right = st.columns([2, 3], gap="large")
    blocks = block_sizes_for(weight.shape[1], options=(2, 4, 8, 16, 32, 64, 128))
    with left:
        intro("granularity")
        bits = pick(st.select_slider, "Bits", "l2.bits", [2, 3, 4, 5, 6, 7, 8], 4)
        mode = pick(st.radio, "Grid", "l2.mode", ["symmetric", "asymmetric"], "symmetric", horizontal=True)
        block = pick(
            st.select_slider,
            "Block size (input channels per scale)",
            "l2.block",
            blocks or [0],
            32 if 32 in blocks else (blocks[-1] if blocks else 0),
            disabled=not blocks,
            help="Per block: each output channel gets one scale per this many input channels.",
        )
        outlier = toggle(
            "Make one channel an outlier",
            "l2.outlier",
            False,
            help="Multiplies one output channel's weights, as a badly trained or unnormalised channel would.",
        )
        channel, factor = 0, 1.0
        if outlier:
            channel = pick(
                st.select_slider,
                "Outlier channel",
                "l2.channel",
                list(range(weight.shape[0])),
                min(5, weight.shape[0] - 1),
            )
            factor = pick(
                st.select_slider,
                "Outlier factor",
                "l2.factor",
                [2.0, 4.0, 8.0, 16.0, 32.0],
                8.0,
                format_func=lambda v: f"× {v:g}",
            )
        compare_to = pick(
            st.radio,
            "Open in Compress as",
            "l2.handoff",
            ["per_channel", "per_block"],
            "per_channel",
            horizontal=True,
            format_func=figures.GRANULARITY_LABELS.get,
            help="The granularity the button below applies to the whole model.",
        )
    extra = (int(channel), float(factor)) if outlier else None
    view = compute(
        "Quantizing",
        _view,
        ctx.model_key,
        ctx.layer,
        int(bits),
        mode == "symmetric",
        int(block),
        extra,
        bool(blocks),
        ctx,
    )
    if view is None:
        return
    with right:
        chart(view.scales, "learn.l2.scales")
        chart(view.snr, "learn.l2.snr")
    if not blocks:
        st.caption(
            f":material/info: {weight.shape[1]} input channels leave no block size with two or more blocks; "
            "per block is not shown."
        )
    metrics(view.numbers)
    for line in _depthwise_notes(ctx.model_key, ctx.layer, ctx):
        st.caption(":material/info: " + line)
    chosen = view.settings.get(compare_to) or view.settings["per_channel"]
    open_in_compress(handoff.from_linear(chosen), key="granularity")
