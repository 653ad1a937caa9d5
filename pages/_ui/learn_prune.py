"""Learn, lesson 4: pruning and sparsity — the magnitude threshold, mask patterns and the sparsity–SNR curve."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.learn import figures, handoff
from core.learn.pruning import PruneSetting
from core.learn.pruning import check_fits as prune_fits
from core.learn.tensors import crop, crop_note, matrix_view
from pages._ui.learn_common import (
    LessonContext,
    Metric,
    chart,
    compute,
    curve_of,
    fmt_db,
    histogram_of,
    intro,
    metrics,
    open_in_compress,
    pick,
    prune_of,
)


@dataclass(frozen=True)
class PruneView:
    histogram: go.Figure
    mask: go.Figure
    curve: go.Figure
    numbers: tuple[Metric, ...]


@st.cache_resource(max_entries=64, show_spinner=False)
def _view(
    key: str, layer: str, setting: PruneSetting, _ctx: LessonContext, _curves: dict[str, tuple[np.ndarray, np.ndarray]]
) -> PruneView:
    """`_curves` follows from (layer, setting.structure, setting.block_size), which are in the key."""
    del key, layer  # cache key only (the context carries them)
    weight = _ctx.weight
    result = prune_of(_ctx, setting)
    unstructured = setting.structure == "unstructured"
    counts, edges = histogram_of(_ctx)
    pruned_counts, _ = np.histogram(weight[~result.mask], bins=edges)
    sparsity, threshold = result.sparsity, result.threshold
    histogram = figures.threshold_histogram_figure(
        kept_counts=counts - pruned_counts,
        pruned_counts=pruned_counts,
        edges=edges,
        threshold=threshold if unstructured else None,
        title=f"Which weights go: {sparsity:.1%} set to zero",
    )
    matrix, what = matrix_view(result.pruned)
    mask, _ = matrix_view(result.mask)
    mask_figure = figures.mask_heatmap_figure(
        mask=crop(mask),
        values=crop(matrix),
        title="The mask on a corner of the weights" + crop_note(mask, crop(mask)) + ": blank = zero",
        x_title=what,
    )
    curve = figures.sparsity_snr_figure(
        curves=_curves, current=(sparsity, result.snr_db), title="Weight SNR falls as sparsity rises"
    )
    parts = result.storage_bits()
    numbers = (
        ("Sparsity", f"{sparsity:.1%}", "Fraction of weights that are exactly zero after pruning."),
        (
            "Threshold",
            f"{threshold:.3g}" if unstructured else "—",
            "Unstructured: every weight with a smaller magnitude is zeroed.",
        ),
        ("Weight SNR", fmt_db(result.snr_db), "Pruned weights vs the originals."),
        (
            "Bits per weight",
            f"{result.bits_per_weight():.2f}",
            "1-bit mask per position + fp16 non-zeros (16 when dense).",
        ),
        ("Mask bits", f"{parts['masks'] / weight.size:.2f}", "One bit for every weight position."),
    )
    return PruneView(histogram=histogram, mask=mask_figure, curve=curve, numbers=numbers)


@st.fragment
def render(ctx: LessonContext) -> None:
    weight = ctx.weight
    left, right = st.columns([2, 3], gap="large")
    with left:
        intro("prune")
        structure = pick(
            st.radio,
            "Pattern",
            "l4.structure",
            ["unstructured", "block", "n_m"],
            "unstructured",
            horizontal=True,
            format_func={"unstructured": "unstructured", "block": "blocks", "n_m": "n:m"}.get,
        )
        sparsity = 0.5
        if structure != "n_m":
            sparsity = pick(
                st.select_slider,
                "Target sparsity",
                "l4.sparsity",
                [round(v, 2) for v in np.arange(0.0, 0.951, 0.05)],
                0.5,
                format_func=lambda v: f"{v:.0%}",
            )
        block = pick(
            st.select_slider,
            "Block size (output channels)",
            "l4.block",
            [2, 4, 8, 16],
            4,
            disabled=structure != "block",
        )
        ratio = pick(
            st.select_slider,
            "n:m (n zeros in every m input channels)",
            "l4.nm",
            ["1:2", "1:4", "2:4", "3:4", "2:8", "4:8", "6:8"],
            "2:4",
            disabled=structure != "n_m",
        )
    n, m = (int(v) for v in ratio.split(":"))
    setting = PruneSetting(structure=structure, sparsity=float(sparsity), block_size=int(block), n=n, m=m)
    reason = prune_fits(weight.shape, setting)
    if reason:
        st.warning(f"The pruner would skip this tensor: {reason}", icon=":material/info:")
        return
    if compute("Pruning", prune_of, ctx, setting) is None:
        return
    curves = {"unstructured": curve_of(ctx, "unstructured", 4)}
    if structure == "block":
        curves[f"block {block}"] = curve_of(ctx, "block", int(block))
    view = _view(ctx.model_key, ctx.layer, setting, ctx, curves)
    with right:
        chart(view.histogram, "learn.l4.histogram")
        chart(view.mask, "learn.l4.mask")
    chart(view.curve, "learn.l4.curve")
    metrics(view.numbers)
    st.caption("Masks from coremltools' magnitude_ranked_mask / n_m_mask, the functions its MagnitudePruner applies.")
    open_in_compress(handoff.from_prune(setting), key="prune")
