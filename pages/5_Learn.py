"""Learn: short lessons with sliders on a layer of the loaded model; every number comes from the real libraries."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import streamlit as st

from core.learn import figures, handoff
from core.learn.activations import (
    CALIBRATION_BATCH,
    OBSERVERS,
    calibration_counts,
    calibration_data,
    study_activations,
    w8a8_error,
)
from core.learn.artifact import where_the_bytes_go
from core.learn.finetune import FineTuneSetting, fine_tune, straight_through
from core.learn.lessons import LESSONS, lesson
from core.learn.palettization import PaletteSetting, check_fits, palettize, vector_pairs
from core.learn.pruning import PruneSetting, prune, sparsity_curve
from core.learn.pruning import check_fits as prune_fits
from core.learn.quantization import LinearSetting, block_sizes_for, engine_for, linear_quantize, staircase, with_outlier
from core.learn.tensors import TOY_NAME, crop, largest_layer, layer_choices, layer_weight, matrix_view, toy_tensor
from core.paths import cache_dir
from core.specs import PalettizeSpec, PruneSpec, QuantizeWeightsSpec
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
        st.session_state.update(made.session_values())  # the Compress page's cfg.* widget keys, and its tab
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


# --------------------------------------------------------------------------- lesson 5: activations


@st.cache_resource(max_entries=8, show_spinner="Running the calibration images through the model…")
def _activations(key: str, layer: str, symmetric: bool, _module: Any, _dataset: Any) -> Any:
    del key
    counts = calibration_counts(model.input_shape)
    batches, held_out, source = calibration_data(input_shape=model.input_shape, dataset=_dataset, images=max(counts))
    return study_activations(module=_module, layer=layer, calibration=batches, held_out=held_out, counts=counts,
                             symmetric=symmetric, source=source)


@st.cache_resource(max_entries=8, show_spinner=False)
def _activation_histogram(key: str, layer: str, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    study = _activations(key, layer, symmetric, model.module, dataset)
    return figures.histogram(study.sample, bins=120)


@st.cache_resource(max_entries=128, show_spinner=False)
def _w8a8(key: str, layer: str, symmetric: bool, observer: str, images: int) -> Any:
    study = _activations(key, layer, symmetric, model.module, dataset)
    return w8a8_error(module=model.module, study=study, observed=study.range_at(observer, images))


def lesson_activations() -> None:
    left, right = st.columns([2, 3], gap="large")
    real = layer if layer != TOY else largest_layer(choices)
    counts = list(calibration_counts(model.input_shape))
    with left:
        intro("activations")
        if layer == TOY:
            st.caption(f":material/info: Activations need a real layer; showing **{real}**.")
        images = pick(st.select_slider, "Calibration images (N)", "l5.images", counts, counts[min(2, len(counts) - 1)],
                      help=f"Fed in batches of {CALIBRATION_BATCH}; the observers update after every batch.")
        observer = pick(st.radio, "Observer", "l5.observer", list(OBSERVERS), "moving_average",
                        format_func=OBSERVERS.get, help="How the range is chosen from what the calibration images showed.")
        mode = pick(st.radio, "Grid", "l5.mode", ["asymmetric", "symmetric"], "asymmetric", horizontal=True,
                    help="quint8 (0…255) with a zero-point, or centred (zero-point 128) as the symmetric W8A8 recipe.")
    symmetric = mode == "symmetric"
    study = compute("Calibrating", _activations, model_key, real, symmetric, model.module, dataset)
    if study is None:
        return
    chosen = study.range_at(observer, int(images))
    error = compute("Measuring", _w8a8, model_key, real, symmetric, observer, int(images))
    with right:
        counts_hist, edges = _activation_histogram(model_key, real, symmetric)
        ranges = {f"{kind} range": (study.range_at(kind, int(images)).low, study.range_at(kind, int(images)).high)
                  for kind in OBSERVERS}
        st.plotly_chart(figures.activation_histogram_figure(
            counts=counts_hist, edges=edges, ranges=ranges,
            title=f"Inputs of {real} over {max(study.counts)} images, and each observer's range after N = {images}"),
            key="learn.l5.histogram", config=CHART_CONFIG)
        highs = {f"{kind} range": np.array([r.high for r in study.ranges[kind]]) for kind in OBSERVERS}
        st.plotly_chart(figures.range_settling_figure(
            counts=np.array(study.counts), highs=highs, batch_max=study.batch_max, batch_size=CALIBRATION_BATCH,
            current=int(images), title="The range settles as N grows (top of the range)"),
            key="learn.l5.settling", config=CHART_CONFIG)
    metrics([
        ("Scale", f"{chosen.scale:.4g}", "Activation units per integer step (quint8, 256 levels)."),
        ("Zero-point", f"{chosen.zero_point}", "The integer that stands for 0.0."),
        ("Range", f"{chosen.low:.3g} … {chosen.high:.3g}", "What the quint8 grid covers: (0 − zp)·s … (255 − zp)·s."),
    ])
    if error is not None:
        metrics([
            ("Held-out clipped", f"{error.clipped_fraction:.2%}", "Held-out input values outside the range."),
            ("Output SNR · W8", fmt_db(error.weights_only_db), "Layer output, int8 weights, float inputs."),
            ("Output SNR · A8", fmt_db(error.activations_only_db), "Layer output, float weights, int8 inputs."),
            ("Output SNR · W8A8", fmt_db(error.both_db), "Layer output, int8 weights and inputs, vs float."),
        ])
    st.caption(f"Observers: torch.ao {', '.join(OBSERVERS)} (quint8, per tensor), as coremltools' LinearQuantizer "
               f"configures them; int8 weights from coremltools' compute_qparams (per channel). Data: {study.source}.")
    open_in_compress(handoff.from_activations(observer=observer, images=int(images), symmetric=symmetric),
                     key="activations")


# --------------------------------------------------------------------------- lesson 6: fake quantization


@st.cache_resource(show_spinner=False)
def _finished_runs() -> dict:
    """Fine-tuning runs finished in this server process, by setting (a run takes seconds; moving back is instant)."""
    return {}


@st.cache_resource(show_spinner=False)
def _finetune_subject() -> tuple[Any, Any]:
    """The sample fashion_cnn and Fashion-MNIST: the fine-tuning run must take seconds whatever model is loaded."""
    from core.data import load_fashion_mnist
    from core.models.sources import load_model

    return load_model("sample:fashion_cnn"), load_fashion_mnist()


def lesson_finetune() -> None:
    left, right = st.columns([2, 3], gap="large")
    with left:
        intro("finetune")
        bits = pick(st.select_slider, "Bits", "l6.bits", [2, 3, 4, 8], 2, help="Symmetric per-channel grid of 2ⁿ − 1 levels.")
        steps = pick(st.select_slider, "Fine-tuning steps", "l6.steps", [10, 20, 40, 80], 40,
                     help="Adam steps of 32 training images each.")
        lr = pick(st.select_slider, "Learning rate", "l6.lr", [1e-4, 3e-4, 1e-3], 1e-3, format_func=lambda v: f"{v:g}")
    setting = FineTuneSetting(bits=int(bits), steps=int(steps), learning_rate=float(lr))
    with right:
        matrix = weight.reshape(weight.shape[0], -1)
        limit = float(np.abs(matrix[0]).max()) or 1.0
        clamp = limit * (1 + 0.5 / (2 ** (int(bits) - 1) - 1))  # beyond half a step past the last level: clamped
        x = np.linspace(-1.25 * clamp, 1.25 * clamp, 801, dtype=np.float32)
        forward, gradient = straight_through(x, bits=int(bits), limit=limit)
        st.plotly_chart(figures.straight_through_figure(
            x=x, forward=forward, gradient=gradient, limit=clamp,
            title=f"Fake quantization at {bits} bits on the grid of channel 0 of "
                  f"{TOY_NAME if layer == TOY else layer}: forward and backward"),
            key="learn.l6.ste", config=CHART_CONFIG)
        runs = _finished_runs()
        run = runs.get(setting)
        if run is None:
            st.caption(f"The run fine-tunes the sample fashion_cnn for {steps} steps — seconds on a laptop CPU.")
            if st.button(f"Fine-tune {bits}-bit fashion_cnn for {steps} steps", key="learn.l6.run",
                         icon=":material/model_training:"):
                subject, data = _finetune_subject()
                with st.status("Fine-tuning…", expanded=True) as status:
                    bar = st.progress(0.0)
                    run = compute("Fine-tuning", lambda: fine_tune(
                        module=subject.module, dataset=data, setting=setting,
                        progress=lambda f, m: bar.progress(min(f, 1.0), text=m)))
                    status.update(label="Fine-tuned" if run else "Fine-tuning stopped", state="complete" if run else "error",
                                  expanded=False)
                if run is not None:
                    runs[setting] = run
                    st.rerun()  # redraw without the button, with the loss curve
        if run is not None:
            st.plotly_chart(figures.loss_curve_figure(
                losses=run.losses, float_losses=run.float_losses,
                title=f"Loss while fine-tuning {bits}-bit fashion_cnn ({run.seconds:.1f} s)"),
                key="learn.l6.loss", config=CHART_CONFIG)
    if run is not None:
        recovered = run.recovered
        metrics([
            ("Float accuracy", f"{run.float_accuracy:.1%}", f"Top-1 on {setting.eval_images} held-out test images."),
            ("Rounded, before", f"{run.before_accuracy:.1%}", "Fake-quantized weights, no fine-tuning (data-free)."),
            ("After fine-tuning", f"{run.after_accuracy:.1%}", f"After {steps} steps with the straight-through estimator."),
            ("Loss recovered", "—" if recovered is None else f"{recovered:.0%}",
             "Share of the accuracy lost to rounding that fine-tuning won back."),
            ("Layers rounded", f"{len(run.layers)}", "Every layer with more than 2,048 weights, as Compress does."),
        ])
    st.caption("Forward and gradient from torch.fake_quantize_per_channel_affine (autograd) with coremltools' "
               "symmetric per-channel scale max|w| / (2ⁿ⁻¹ − 1).")
    open_in_compress(handoff.from_finetune(bits=int(bits), steps=int(steps), learning_rate=float(lr),
                                           batch_size=setting.batch_size), key="finetune")


# --------------------------------------------------------------------------- lesson 7: where the bytes go


@st.cache_resource(show_spinner=False)
def _exports() -> dict:
    """Whole-model exports read back in this server process, by (model, spec): one export per setting."""
    return {}


def _bytes_spec(method: str, level: Any) -> Any:
    if method == "palettize":
        return PalettizeSpec(n_bits=int(level))
    if method == "quantize_weights":
        return QuantizeWeightsSpec(dtype=str(level))
    return PruneSpec(target_sparsity=float(level))


def _bytes_numbers(made: Any) -> None:
    """The exported package's numbers and its list of stored tensors."""
    artifact = made.artifact
    metrics([
        ("On disk", f"{artifact.total_bytes / 1e6:.3f} MB", "Every file of the exported .mlpackage."),
        ("Size model", f"{made.theory.total_bytes / 1e6:.3f} MB", "core.measure.size: indices, LUTs, scales, masks, fp16."),
        ("Tensor data", f"{artifact.data_bytes / 1e6:.3f} MB", "Sum of the blob sizes recorded in weight.bin's headers."),
        ("Overhead", f"{(artifact.total_bytes - artifact.data_bytes) / 1e3:.1f} kB",
         "Blob headers, alignment, the program description and the manifest."),
        ("vs fp16", f"{artifact.total_bytes / made.fp16_bytes:.2f}×", "File size ÷ every float of the model at 2 bytes."),
    ])
    with st.expander(f"The {len(artifact.blobs)} tensors stored in weight.bin"):
        st.dataframe([{"tensor": b.name, "kind": b.kind, "read by": b.consumer, "bytes": b.data_bytes}
                      for b in artifact.blobs], hide_index=True, width="stretch")
    st.caption(f"{made.compressed_layers} of {made.layers} weight layers compressed by core.compress (as the Compress "
               "page), exported by core.export, read back with coremltools' load_spec and the blob headers.")


def lesson_bytes() -> None:
    left, right = st.columns([2, 3], gap="large")
    with left:
        intro("bytes")
        method = pick(st.radio, "Compress the whole model by", "l7.method", ["palettize", "quantize_weights", "prune"],
                      "palettize", horizontal=True, format_func={"palettize": "palettization",
                                                                 "quantize_weights": "integer weights",
                                                                 "prune": "pruning"}.get)
        options: dict[str, tuple[list, Any, str, Callable[[Any], str]]] = {
            "palettize": ([2, 4, 6, 8], 4, "Bits per index", lambda v: f"{v} bits"),
            "quantize_weights": (["int4", "int8"], "int8", "Integer type", str),
            "prune": ([0.5, 0.75, 0.9], 0.75, "Sparsity", lambda v: f"{v:.0%}"),
        }
        values, default, label, fmt = options[method]
        level = pick(st.select_slider, label, f"l7.{method}", values, default, format_func=fmt)
    spec = _bytes_spec(method, level)
    if method == "palettize":
        one = compute("Palettizing", _palette, model_key, layer, PaletteSetting(n_bits=int(level)))
    elif method == "quantize_weights":
        bits = 4 if level == "int4" else 8
        one = compute("Quantizing", _linear, model_key, layer, LinearSetting(bits=bits, granularity="per_channel"), None)
    else:
        one = compute("Pruning", _prune, model_key, layer, PruneSetting(sparsity=float(level)))
    exports = _exports()
    key = (model_key, repr(spec.to_dict()))
    made = exports.get(key)
    with right:
        if one is not None:
            st.plotly_chart(figures.bits_figure(
                parts=one.storage_bits(), weights=weight.size,
                title=f"One layer first — {TOY_NAME if layer == TOY else layer}: bits per weight by part"),
                key="learn.l7.layer", config=CHART_CONFIG)
        if made is None:
            st.caption(f"Compressing and exporting {model.label} takes a few seconds to a minute, depending on its size.")
            if st.button(f"Compress, export and read back ({spec.summary()})", key="learn.l7.run",
                         icon=":material/deployed_code:"):
                folder = cache_dir() / "learn" / hashlib.sha256(repr(key).encode()).hexdigest()[:16]
                with st.status("Compressing and exporting the whole model…", expanded=True) as status:
                    bar = st.progress(0.0)
                    made = compute("Exporting", lambda: where_the_bytes_go(
                        model=model, spec=spec, dataset=dataset, out_dir=folder,
                        progress=lambda f, m: bar.progress(min(f, 1.0), text=m)))
                    status.update(label="Exported" if made else "Export failed", state="complete" if made else "error",
                                  expanded=False)
                if made is not None:
                    exports[key] = made
                    st.rerun()  # redraw without the button, with the check
        if made is not None:
            st.plotly_chart(figures.bytes_check_figure(
                rows=made.rows(), program_bytes=made.artifact.program_bytes,
                blob_overhead_bytes=made.artifact.blob_overhead_bytes,
                title=f"{model.label} · {spec.summary()}: the size model vs the exported file"),
                key="learn.l7.bytes", config=CHART_CONFIG)
    if made is not None:
        _bytes_numbers(made)
    open_in_compress(handoff.from_spec(spec), key="bytes")


LESSON_PAGES = {"scale": lesson_scale, "granularity": lesson_granularity, "palettize": lesson_palettize,
                "prune": lesson_prune, "activations": lesson_activations, "finetune": lesson_finetune,
                "bytes": lesson_bytes}
with st.container(key=f"learn-lesson-{lesson_key}"):  # a new container per lesson: nothing of the last one lingers
    LESSON_PAGES[lesson_key]()
