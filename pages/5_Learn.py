"""Learn: short lessons with sliders on a layer of the loaded model; every number comes from the real libraries."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import streamlit as st

from core.learn import figures, handoff
from core.learn.lessons import LESSONS, lesson
from core.learn.palettization import PaletteSetting, check_fits, palettize, vector_pairs
from core.learn.pruning import PruneSetting, prune, sparsity_curve
from core.learn.pruning import check_fits as prune_fits
from core.learn.quantization import LinearSetting, block_sizes_for, engine_for, linear_quantize, staircase, with_outlier
from core.learn.tensors import TOY_NAME, crop, largest_layer, layer_choices, layer_weight, matrix_view, toy_tensor
from pages._ui.session import page_context

model, dataset = page_context()
st.title("Learn", anchor=False)
st.caption("How compression works, on the weights of the model you loaded. Every number on this page is "
           "computed by coremltools or torch.ao — the same code the Compress page runs.")
if model is None:
    st.stop()

PREFIX = "cfg.learn."  # cfg.* values survive page switches
TOY = "__toy__"
CHART_CONFIG = {"displaylogo": False}
# The Compress page's widget keys for each spec field (pages/2_Compress.py), and its tab per method.
COMPRESS_PREFIX = {"palettize": "cfg.palettize.", "quantize_weights": "cfg.qw.", "prune": "cfg.prune."}
COMPRESS_TAB_KEY = "compress.tab"

model_key = f"{model.source_id}#{id(model.module)}"
choices = layer_choices(model.module)
by_name = {c.name: c for c in choices}


# --------------------------------------------------------------------------- cached computations


@st.cache_resource(max_entries=16, show_spinner=False)
def _weight(key: str, layer: str, _module: Any) -> np.ndarray:
    del key  # part of the cache key only
    return toy_tensor() if layer == TOY else layer_weight(_module, name=layer)


def weight_of(layer: str) -> np.ndarray:
    return _weight(model_key, layer, model.module)


@st.cache_resource(max_entries=64, show_spinner=False)
def _histogram(key: str, layer: str, bins: int) -> tuple[np.ndarray, np.ndarray]:
    del key
    return figures.histogram(weight_of(layer), bins=bins)


@st.cache_resource(max_entries=64, show_spinner=False)
def _linear(key: str, layer: str, setting: LinearSetting, outlier: tuple[int, float] | None) -> Any:
    del key
    weight = weight_of(layer)
    if outlier is not None:
        weight = with_outlier(weight, channel=outlier[0], factor=outlier[1])
    return linear_quantize(weight, setting)


@st.cache_resource(max_entries=32, show_spinner="Running coremltools' k-means on this layer…")
def _palette(key: str, layer: str, setting: PaletteSetting) -> Any:
    del key
    return palettize(weight_of(layer), setting)


@st.cache_resource(max_entries=32, show_spinner=False)
def _prune(key: str, layer: str, setting: PruneSetting) -> Any:
    del key
    return prune(weight_of(layer), setting)


@st.cache_resource(max_entries=16, show_spinner="Pruning at 19 sparsities for the curve…")
def _curve(key: str, layer: str, structure: str, block: int) -> tuple[np.ndarray, np.ndarray]:
    del key
    return sparsity_curve(weight_of(layer), structure=structure, block_size=block)


def compute(action: str, fn: Callable[..., Any], *args: Any) -> Any:
    """A lesson computation; a setting the library refuses becomes a message naming what to change."""
    try:
        return fn(*args)
    except ValueError as exc:
        st.warning(f"{action}: {exc}", icon=":material/info:")
        return None


# --------------------------------------------------------------------------- widgets


def keep_valid(key: str, options: list, default: Any) -> None:
    """Start a widget at its default, and move it back there when its current value is no longer offered."""
    if st.session_state.get(PREFIX + key) not in options:
        st.session_state[PREFIX + key] = default if default in options else options[0]


def pick(widget: Callable[..., Any], label: str, key: str, options: list, default: Any, **kwargs: Any) -> Any:
    keep_valid(key, options, default)
    return widget(label, options=options, key=PREFIX + key, **kwargs)


def toggle(label: str, key: str, default: bool, **kwargs: Any) -> bool:
    st.session_state.setdefault(PREFIX + key, default)
    return st.toggle(label, key=PREFIX + key, **kwargs)


def open_in_compress(made: handoff.Handoff, *, key: str) -> None:
    """The button that opens the Compress page with this setting applied to the whole model."""
    label = f"Open Compress with this setting ({made.tab.lower()})"
    for note in made.notes:
        st.caption(f":material/info: {note}")
    if st.button(label, key=f"learn.open.{key}", icon=":material/compress:", type="primary"):
        prefix = COMPRESS_PREFIX[made.spec.method]
        for name, value in made.fields.items():
            st.session_state[prefix + name] = value
        st.session_state[COMPRESS_TAB_KEY] = made.tab
        st.switch_page("pages/2_Compress.py")


def metrics(items: list[tuple[str, str, str | None]]) -> None:
    columns = st.columns(len(items))
    for column, (label, value, help_text) in zip(columns, items, strict=True):
        column.metric(label, value, help=help_text)


def fmt_db(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isinf(value) and value > 0):
        return "∞ (exact)"
    return f"{value:.1f} dB"


def fmt_small(value: float) -> str:
    return "0" if value == 0 else f"{value:.3g}"


def intro(key: str) -> None:
    item = lesson(key)
    st.subheader(item.title, anchor=False)
    st.markdown(item.text)
    st.info(f"**Try this:** {item.try_this}", icon=":material/science:")


# --------------------------------------------------------------------------- page head: lesson and tensor

titles = {item.key: item.title for item in LESSONS}
keep_valid("lesson", list(titles), LESSONS[0].key)
head = st.columns([3, 2], vertical_alignment="bottom")
lesson_key = head[0].radio("Lesson", list(titles), format_func=titles.get, key=PREFIX + "lesson", horizontal=True)
tensor_options = [c.name for c in choices] + [TOY]
keep_valid("layer", tensor_options, largest_layer(choices))
layer = head[1].selectbox(
    "Weights to learn on", tensor_options, key=PREFIX + "layer",
    format_func=lambda n: TOY_NAME if n == TOY else by_name[n].label,
    help="A layer of the loaded model (the largest by default), or a tiny hand-made tensor whose every value you can see.",
)
weight = weight_of(layer)
log_y = False
st.divider()


# --------------------------------------------------------------------------- lesson 1: scale and zero-point


def lesson_scale() -> None:
    left, right = st.columns([2, 3], gap="large")
    with left:
        intro("scale")
        bits = pick(st.select_slider, "Bits", "l1.bits", [2, 3, 4, 5, 6, 7, 8], 4,
                    help="2ⁿ integer levels. coremltools computes 4 and 8 bits (what Compress offers); torch.ao the others.")
        mode = pick(st.radio, "Grid", "l1.mode", ["symmetric", "asymmetric"], "symmetric", horizontal=True,
                    help="Symmetric: centred on zero. Asymmetric: a zero-point shifts the grid to the weights' range.")
        range_kind = pick(st.radio, "Range", "l1.range", ["min / max", "percentile clip"], "min / max", horizontal=True,
                          help="Where the grid ends: the extreme weights, or a percentile of the magnitudes.")
        percentile = 100.0
        if range_kind == "percentile clip":
            percentile = pick(st.select_slider, "Keep this percentile (each tail)", "l1.percentile",
                              [90.0, 95.0, 99.0, 99.5, 99.9, 99.99], 99.9, format_func=lambda v: f"{v:g} %")
        show_log = toggle("Log scale", "l1.log", False, help="Shows the rare weights in the tails.")
    setting = LinearSetting(bits=int(bits), symmetric=mode == "symmetric", clip_percentile=float(percentile))
    result = compute("Quantizing", _linear, model_key, layer, setting, None)
    if result is None:
        return
    with right:
        counts, edges = _histogram(model_key, layer, 120)
        low, high = float(result.clip_low.ravel()[0]), float(result.clip_high.ravel()[0])
        st.plotly_chart(figures.grid_histogram_figure(
            counts=counts, edges=edges, grid=result.grid(), clip_low=low, clip_high=high, log_y=show_log,
            title=f"Weights of {TOY_NAME if layer == TOY else layer} and the {result.levels} representable values"),
            key="learn.l1.histogram", config=CHART_CONFIG)
        x, y = staircase(result, low=float(edges[0]), high=float(edges[-1]))
        st.plotly_chart(figures.staircase_figure(x=x, y=y, clip_low=low, clip_high=high,
                                                 title="float → integer → float: the staircase"),
                        key="learn.l1.staircase", config=CHART_CONFIG)
    metrics([
        ("Scale", f"{float(result.scale.ravel()[0]):.4g}", "Weight units per integer step: (max − min) / (levels − 1)."),
        ("Zero-point", f"{int(result.zero_point.ravel()[0])}", "The integer that stands for 0.0 (0 when symmetric)."),
        ("Rounding error", fmt_small(result.rounding_mse), "Mean squared error from weights inside the range."),
        ("Clipping error", fmt_small(result.clipping_mse), "Mean squared error from weights outside the range."),
        ("Clipped weights", f"{int(result.clipped.sum()):,}", "Weights beyond the range, saturated at the end levels."),
        ("Weight SNR", fmt_db(result.snr_db), "10·log10(Σw² / Σ(w − ŵ)²): higher is closer to the original."),
    ])
    st.caption(f"Computed by {engine_for(setting.bits)} "
               f"({'coremltools.optimize compute_qparams, as PostTrainingQuantizer' if engine_for(setting.bits) == 'coremltools' else 'MinMaxObserver + fake_quantize_per_tensor_affine; coremltools offers only 4 and 8 bits'}).")
    open_in_compress(handoff.from_linear(setting), key="scale")


# --------------------------------------------------------------------------- lesson 2: granularity


def lesson_granularity() -> None:
    left, right = st.columns([2, 3], gap="large")
    blocks = block_sizes_for(weight.shape[1], options=(2, 4, 8, 16, 32, 64, 128))
    with left:
        intro("granularity")
        bits = pick(st.select_slider, "Bits", "l2.bits", [2, 3, 4, 5, 6, 7, 8], 4)
        mode = pick(st.radio, "Grid", "l2.mode", ["symmetric", "asymmetric"], "symmetric", horizontal=True)
        block = pick(st.select_slider, "Block size (input channels per scale)", "l2.block", blocks or [0],
                     32 if 32 in blocks else (blocks[-1] if blocks else 0), disabled=not blocks,
                     help="Per block: each output channel gets one scale per this many input channels.")
        outlier = toggle("Make one channel an outlier", "l2.outlier", False,
                         help="Multiplies one output channel's weights, as a badly trained or unnormalised channel would.")
        channel, factor = 0, 1.0
        if outlier:
            channel = pick(st.select_slider, "Outlier channel", "l2.channel", list(range(weight.shape[0])),
                           min(5, weight.shape[0] - 1))
            factor = pick(st.select_slider, "Outlier factor", "l2.factor", [2.0, 4.0, 8.0, 16.0, 32.0], 8.0,
                          format_func=lambda v: f"× {v:g}")
        compare_to = pick(st.radio, "Open in Compress as", "l2.handoff", ["per_channel", "per_block"], "per_channel",
                          horizontal=True, format_func=figures.GRANULARITY_LABELS.get,
                          help="The granularity the button below applies to the whole model.")
    symmetric = mode == "symmetric"
    extra = (int(channel), float(factor)) if outlier else None
    results = {}
    for granularity in ("per_tensor", "per_channel", "per_block"):
        if granularity == "per_block" and not blocks:
            continue
        setting = LinearSetting(bits=int(bits), symmetric=symmetric, granularity=granularity, block_size=int(block) or 32)
        results[granularity] = compute("Quantizing", _linear, model_key, layer, setting, extra)
    if any(r is None for r in results.values()):
        return
    with right:
        tensor_scale = float(results["per_tensor"].scale.ravel()[0])
        st.plotly_chart(figures.scales_figure(
            per_tensor=tensor_scale, per_channel=results["per_channel"].scale.ravel(),
            per_block=results["per_block"].scale if "per_block" in results else None,
            highlight=int(channel) if outlier else None, title="The scales: one per tensor, channel or block"),
            key="learn.l2.scales", config=CHART_CONFIG)
        source = with_outlier(weight, channel=int(channel), factor=float(factor)) if outlier else weight
        snr = {g: r.channel_snr_db(source) for g, r in results.items()}
        st.plotly_chart(figures.channel_snr_figure(snr=snr, title="Weight SNR of every output channel"),
                        key="learn.l2.snr", config=CHART_CONFIG)
    if not blocks:
        st.caption(f":material/info: {weight.shape[1]} input channels leave no block size with two or more blocks; "
                   "per block is not shown.")
    items = []
    for granularity, result in results.items():
        overhead = (result.storage_bits()["scales"] + result.storage_bits()["zero_points"]) / result.codes.size
        items.append((f"SNR · {granularity.removeprefix('per_')}", fmt_db(result.snr_db),
                      f"{result.n_scales:,} scale(s): +{overhead:.3f} bits per weight for scales"
                      + ("" if symmetric else " and zero-points") + "."))
    items += [(f"Scale cost · {g.removeprefix('per_')}",
               f"{(r.storage_bits()['scales'] + r.storage_bits()['zero_points']) / r.codes.size:.3f} b/w",
               f"{r.n_scales:,} scales × 16 bits" + ("" if symmetric else " + as many 8-bit zero-points") + ".")
              for g, r in results.items() if g != "per_tensor"]
    metrics(items)
    chosen = results.get(compare_to) or results["per_channel"]
    open_in_compress(handoff.from_linear(chosen.setting), key="granularity")


# --------------------------------------------------------------------------- lesson 3: palettization


def lesson_palettize() -> None:
    left, right = st.columns([2, 3], gap="large")
    channels = weight.shape[0]
    groups = [g for g in (1, 2, 4, 8, 16, 32, 64, 128) if channels % g == 0 and g < channels]
    with left:
        intro("palettize")
        vector = pick(st.radio, "Values per index (cluster_dim)", "l3.cluster_dim", [1, 2], 1, horizontal=True,
                      format_func={1: "1 (scalar)", 2: "2 (vector of a weight pair)"}.get,
                      help="Vector palettization: one index selects a pair of weights from two neighbouring output channels.")
        bit_options = [1, 2, 3, 4] if vector == 2 else [1, 2, 3, 4, 6, 8]
        n_bits = pick(st.select_slider, "Bits per index (LUT of 2ⁿ entries)", "l3.bits", bit_options, 4)
        granularity = pick(st.radio, "LUTs", "l3.granularity", ["per_tensor", "per_grouped_channel"], "per_tensor",
                           horizontal=True, format_func={"per_tensor": "one per tensor",
                                                         "per_grouped_channel": "one per channel group"}.get)
        group = pick(st.select_slider, "Output channels per LUT", "l3.group", groups or [channels],
                     16 if 16 in groups else (groups[-1] if groups else channels),
                     disabled=granularity != "per_grouped_channel")
        scale = toggle("Per-channel scale", "l3.scale", False,
                       help="Divide each output channel by its largest magnitude before clustering (one fp16 scale each).")
        if vector == 2 and weight.size > 100_000:
            st.caption(":material/timer: Vector k-means on a large layer takes about half a minute the first time.")
    setting = PaletteSetting(n_bits=int(n_bits), granularity=granularity, group_size=int(group), cluster_dim=int(vector),
                             per_channel_scale=bool(scale))
    reason = check_fits(weight.shape, setting)
    if reason:
        st.warning(f"coremltools cannot palettize this tensor so: {reason}", icon=":material/info:")
        return
    result = compute("Palettizing", _palette, model_key, layer, setting)
    if result is None:
        return
    with right:
        lut_index = 0
        if result.n_luts > 1:
            lut_index = pick(st.select_slider, "Show the LUT of channel group", "l3.show_group",
                             list(range(result.n_luts)), 0)
        rows = slice(lut_index * result.channels_per_lut, (lut_index + 1) * result.channels_per_lut)
        values = weight[rows]
        unit = ""
        if result.channel_scale is not None:
            values = values / result.channel_scale[rows].reshape((-1,) + (1,) * (weight.ndim - 1))
            unit = " (divided by each channel's scale)"
        if vector == 1:
            counts, edges = figures.histogram(values, bins=120)
            st.plotly_chart(figures.lut_histogram_figure(
                counts=counts, edges=edges, lut=result.lut[lut_index], log_y=False,
                title=f"LUT {lut_index} over its weights{unit}: {setting.entries} k-means centroids"),
                key="learn.l3.histogram", config=CHART_CONFIG)
            matrix, what = matrix_view(result.indices)
            shown = crop(matrix)
            st.plotly_chart(figures.index_heatmap_figure(
                indices=shown, title=f"Index map: the {n_bits}-bit index stored for each weight",
                x_title=what),
                key="learn.l3.indices", config=CHART_CONFIG)
        else:
            pairs, labels = vector_pairs(weight, result)
            st.plotly_chart(figures.vector_scatter_figure(
                pairs=pairs, labels=labels, centroids=result.lut[0],
                title=f"Weight pairs{unit} and the {setting.entries} 2-D LUT entries ({len(pairs):,} pairs shown)"),
                key="learn.l3.pairs", config=CHART_CONFIG)
    parts = result.storage_bits()
    metrics([
        ("Weight SNR", fmt_db(result.snr_db), "Palettized weights vs the originals."),
        ("Bits per weight", f"{result.bits_per_weight():.3f}", "Indices + LUTs (fp16) + per-channel scales, ÷ weights."),
        ("Index bits", f"{parts['indices'] / weight.size:.3f}", f"{n_bits} bits per {vector} weight(s)."),
        ("LUT bits", f"{parts['luts'] / weight.size:.3f}", f"{result.n_luts} LUT(s) × {setting.entries} × {vector} fp16 values."),
        ("LUTs", f"{result.n_luts:,}", "One per tensor, or one per group of output channels."),
        ("Entries used", f"{result.used_entries():,} / {result.n_luts * setting.entries:,}", "LUT entries at least one weight points to."),
    ])
    st.plotly_chart(figures.bits_figure(parts=parts, weights=weight.size, title="Where this layer's bits go"),
                    key="learn.l3.bits", config=CHART_CONFIG)
    st.caption("Computed by coremltools' PostTrainingPalettizer (k-means), as the Compress page's data-free palettization.")
    open_in_compress(handoff.from_palette(setting), key="palettize")


# --------------------------------------------------------------------------- lesson 4: pruning


def lesson_prune() -> None:
    left, right = st.columns([2, 3], gap="large")
    with left:
        intro("prune")
        structure = pick(st.radio, "Pattern", "l4.structure", ["unstructured", "block", "n_m"], "unstructured",
                         horizontal=True, format_func={"unstructured": "unstructured", "block": "blocks",
                                                       "n_m": "n:m"}.get)
        sparsity = 0.5
        if structure != "n_m":
            sparsity = pick(st.select_slider, "Target sparsity", "l4.sparsity",
                            [round(v, 2) for v in np.arange(0.0, 0.951, 0.05)], 0.5, format_func=lambda v: f"{v:.0%}")
        block = pick(st.select_slider, "Block size (output channels)", "l4.block", [2, 4, 8, 16], 4,
                     disabled=structure != "block")
        ratio = pick(st.select_slider, "n:m (n zeros in every m input channels)", "l4.nm",
                     ["1:2", "1:4", "2:4", "3:4", "2:8", "4:8", "6:8"], "2:4", disabled=structure != "n_m")
    n, m = (int(v) for v in ratio.split(":"))
    setting = PruneSetting(structure=structure, sparsity=float(sparsity), block_size=int(block), n=n, m=m)
    reason = prune_fits(weight.shape, setting)
    if reason:
        st.warning(f"The pruner would skip this tensor: {reason}", icon=":material/info:")
        return
    result = compute("Pruning", _prune, model_key, layer, setting)
    if result is None:
        return
    with right:
        counts, edges = _histogram(model_key, layer, 120)
        pruned_counts, _ = np.histogram(weight[~result.mask], bins=edges)
        st.plotly_chart(figures.threshold_histogram_figure(
            kept_counts=counts - pruned_counts, pruned_counts=pruned_counts, edges=edges,
            threshold=result.threshold if structure == "unstructured" else None,
            title=f"Which weights go: {result.sparsity:.1%} set to zero"),
            key="learn.l4.histogram", config=CHART_CONFIG)
        matrix, what = matrix_view(result.pruned)
        mask, _ = matrix_view(result.mask)
        st.plotly_chart(figures.mask_heatmap_figure(
            mask=crop(mask), values=crop(matrix), title="The mask on a corner of the weights (blank = zero)",
            x_title=what),
            key="learn.l4.mask", config=CHART_CONFIG)
    curve_structure = "block" if structure == "block" else "unstructured"
    curves = {"unstructured": _curve(model_key, layer, "unstructured", 4)}
    if curve_structure == "block":
        curves[f"block {block}"] = _curve(model_key, layer, "block", int(block))
    st.plotly_chart(figures.sparsity_snr_figure(curves=curves, current=(result.sparsity, result.snr_db),
                                                title="Weight SNR falls as sparsity rises"),
                    key="learn.l4.curve", config=CHART_CONFIG)
    parts = result.storage_bits()
    metrics([
        ("Sparsity", f"{result.sparsity:.1%}", "Fraction of weights that are exactly zero after pruning."),
        ("Threshold", f"{result.threshold:.3g}" if structure == "unstructured" else "—",
         "Unstructured: every weight with a smaller magnitude is zeroed."),
        ("Weight SNR", fmt_db(result.snr_db), "Pruned weights vs the originals."),
        ("Bits per weight", f"{result.bits_per_weight():.2f}", "1-bit mask per position + fp16 non-zeros (16 when dense)."),
        ("Mask bits", f"{parts['masks'] / weight.size:.2f}", "One bit for every weight position."),
    ])
    st.caption("Masks from coremltools' magnitude_ranked_mask / n_m_mask, the functions its MagnitudePruner applies.")
    open_in_compress(handoff.from_prune(setting), key="prune")


LESSON_PAGES = {"scale": lesson_scale, "granularity": lesson_granularity, "palettize": lesson_palettize,
                "prune": lesson_prune}
LESSON_PAGES[lesson_key]()
