"""Learn, lesson 5: activations and calibration — observers' ranges over N calibration images, W8A8 output error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.formatting import fmt_pct
from core.learn import figures, handoff
from core.learn.activations import (
    CALIBRATION_BATCH,
    OBSERVERS,
    calibration_counts,
    calibration_data,
    study_activations,
    w8a8_error,
)
from core.learn.findings import calibration_finding, settling_title
from core.learn.tensors import largest_layer
from pages._ui.learn_common import (
    TOY,
    LessonContext,
    Metric,
    chart,
    compute,
    fmt_db,
    intro,
    metrics,
    open_in_compress,
    pick,
)


@st.cache_resource(max_entries=8, show_spinner="Running the calibration images through the model…")
def _activations(key: str, layer: str, symmetric: bool, _ctx: LessonContext) -> Any:
    del key
    model = _ctx.model
    counts = calibration_counts(model.input_shape)
    batches, held_out, source = calibration_data(
        input_shape=model.input_shape, dataset=_ctx.dataset, images=max(counts)
    )
    return study_activations(
        module=model.module,
        layer=layer,
        calibration=batches,
        held_out=held_out,
        counts=counts,
        symmetric=symmetric,
        source=source,
    )


@st.cache_resource(max_entries=128, show_spinner=False)
def _w8a8(key: str, layer: str, symmetric: bool, observer: str, images: int, _ctx: LessonContext) -> Any:
    study = _activations(key, layer, symmetric, _ctx)
    return w8a8_error(module=_ctx.model.module, study=study, observed=study.range_at(observer, images))


@dataclass(frozen=True)
class ActivationsView:
    histogram: go.Figure
    settling: go.Figure
    numbers: tuple[Metric, ...]


@st.cache_resource(max_entries=8, show_spinner=False)
def _histogram(key: str, layer: str, symmetric: bool, _ctx: LessonContext) -> tuple[np.ndarray, np.ndarray]:
    return figures.histogram(_activations(key, layer, symmetric, _ctx).sample, bins=120)


@st.cache_resource(max_entries=128, show_spinner=False)
def _view(key: str, layer: str, symmetric: bool, images: int, observer: str, _ctx: LessonContext) -> ActivationsView:
    study = _activations(key, layer, symmetric, _ctx)
    chosen = study.range_at(observer, images)
    counts, edges = _histogram(key, layer, symmetric, _ctx)
    ranges = {
        f"{kind} range": (study.range_at(kind, images).low, study.range_at(kind, images).high) for kind in OBSERVERS
    }
    histogram = figures.activation_histogram_figure(
        counts=counts,
        edges=edges,
        ranges=ranges,
        title=f"Inputs of {layer} over {max(study.counts)} images, and each observer's range after N = {images}",
    )
    highs = {f"{kind} range": np.array([r.high for r in study.ranges[kind]]) for kind in OBSERVERS}
    settling = figures.range_settling_figure(
        counts=np.array(study.counts),
        highs=highs,
        batch_max=study.batch_max,
        batch_size=CALIBRATION_BATCH,
        current=images,
        title=settling_title(study, observer),
    )
    numbers = (
        ("Scale", f"{chosen.scale:.4g}", "Activation units per integer step (quint8, 256 levels)."),
        ("Zero-point", f"{chosen.zero_point}", "The integer that stands for 0.0."),
        ("Range", f"{chosen.low:.3g} … {chosen.high:.3g}", "What the quint8 grid covers: (0 − zp)·s … (255 − zp)·s."),
    )
    return ActivationsView(histogram=histogram, settling=settling, numbers=numbers)


@st.fragment
def render(ctx: LessonContext) -> None:
    left, right = st.columns([2, 3], gap="large")
    real = ctx.layer if ctx.layer != TOY else largest_layer(list(ctx.choices))
    counts = list(calibration_counts(ctx.model.input_shape))
    with left:
        intro("activations")
        if ctx.layer == TOY:
            st.caption(f":material/info: Activations need a real layer; showing **{real}**.")
        images = pick(
            st.select_slider,
            "Calibration images (N)",
            "l5.images",
            counts,
            counts[min(2, len(counts) - 1)],
            help=f"Fed in batches of {CALIBRATION_BATCH}; the observers update after every batch.",
        )
        observer = pick(
            st.radio,
            "Observer",
            "l5.observer",
            list(OBSERVERS),
            "moving_average",
            format_func=OBSERVERS.get,
            help="How the range is chosen from what the calibration images showed.",
        )
        mode = pick(
            st.radio,
            "Grid",
            "l5.mode",
            ["asymmetric", "symmetric"],
            "asymmetric",
            horizontal=True,
            help="quint8 (0…255) with a zero-point, or centred (zero-point 128) as the symmetric W8A8 setting.",
        )
    symmetric = mode == "symmetric"
    study = compute("Calibrating", _activations, ctx.model_key, real, symmetric, ctx)
    if study is None:
        return
    error = compute("Measuring", _w8a8, ctx.model_key, real, symmetric, observer, int(images), ctx)
    view = _view(ctx.model_key, real, symmetric, int(images), observer, ctx)
    with right:
        chart(view.histogram, "learn.l5.histogram")
        chart(view.settling, "learn.l5.settling")
        st.caption(f":material/info: {calibration_finding(study, observer, int(images))}")
    metrics(view.numbers)
    if error is not None:
        metrics(
            [
                ("Held-out clipped", fmt_pct(error.clipped_fraction), "Held-out input values outside the range."),
                ("Output SNR · W8", fmt_db(error.weights_only_db), "Layer output, int8 weights, float inputs."),
                ("Output SNR · A8", fmt_db(error.activations_only_db), "Layer output, float weights, int8 inputs."),
                ("Output SNR · W8A8", fmt_db(error.both_db), "Layer output, int8 weights and inputs, vs float."),
            ]
        )
    st.caption(
        f"Observers: torch.ao {', '.join(OBSERVERS)} (quint8, per tensor), as coremltools' LinearQuantizer "
        f"configures them; int8 weights from coremltools' compute_qparams (per channel). Data: {study.source}."
    )
    open_in_compress(
        handoff.from_activations(observer=observer, images=int(images), symmetric=symmetric), key="activations"
    )
