"""Learn, lesson 6: fake quantization (straight-through rounding) and a short fine-tuning run with its loss curve."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.learn import figures, handoff
from core.learn.finetune import (
    SAMPLE_FOR_FINE_TUNING,
    FineTuneSetting,
    fine_tune_by_reference,
    fine_tune_sample,
    straight_through,
)
from pages._ui import run_client
from pages._ui.learn_common import LessonContext, chart, intro, metrics, open_in_compress, pick, run_in_child


@st.cache_resource(show_spinner=False)
def _finished_runs() -> dict:
    """Fine-tuning runs finished in this server process, by setting (a run takes seconds; moving back is instant)."""
    return {}


def fine_tuning_plan(ctx: LessonContext) -> tuple[str, str | None]:
    """(the model lesson 6 fine-tunes, why it is not the loaded one — None when it is)."""
    model = ctx.model
    if ctx.dataset is None:
        why = "it has no labelled images here (choose a dataset on the Model page)"
    elif not model.accuracy_meaningful:
        why = f"its weights are {model.weights_note}, so its accuracy means nothing"
    elif model.form != "module":
        why = f"it was loaded as a {model.form} program, whose weights cannot be trained here"
    else:
        return model.label, None
    return SAMPLE_FOR_FINE_TUNING.split(":", 1)[1], f"{model.label} is not fine-tuned: {why}"


@st.cache_resource(max_entries=64, show_spinner=False)
def _ste_figure(key: str, layer: str, bits: int, _ctx: LessonContext) -> go.Figure:
    del key, layer  # cache key only (the context carries them)
    weight = _ctx.weight
    matrix = weight.reshape(weight.shape[0], -1)
    limit = float(np.abs(matrix[0]).max()) or 1.0
    clamp = limit * (1 + 0.5 / (2 ** (bits - 1) - 1))  # beyond half a step past the last level: clamped
    x = np.linspace(-1.25 * clamp, 1.25 * clamp, 801, dtype=np.float32)
    forward, gradient = straight_through(x, bits=bits, limit=limit)
    return figures.straight_through_figure(
        x=x,
        forward=forward,
        gradient=gradient,
        limit=clamp,
        title=f"Fake quantization at {bits} bits on the grid of channel 0 of {_ctx.layer_title}: forward and backward",
    )


@st.cache_resource(max_entries=64, show_spinner=False)
def _loss_figure(key: tuple, _run: Any) -> go.Figure:
    """`_run` is the finished run of `key` (one per model and setting in _finished_runs)."""
    return figures.loss_curve_figure(
        losses=_run.losses,
        float_losses=_run.float_losses,
        title=f"Loss while fine-tuning {_run.setting.bits}-bit {_run.model_label} ({_run.seconds:.1f} s)",
    )


def _start(ctx: LessonContext, setting: FineTuneSetting, sample_instead: bool) -> Any:
    if sample_instead:
        target, kwargs = fine_tune_sample, {"setting": setting}
    else:
        target = fine_tune_by_reference
        kwargs = {"model_ref": run_client.model_ref(st.session_state["model_choice"]).to_dict(),
                  "data_ref": run_client.data_ref(st.session_state.get("dataset_choice")).to_dict(), "setting": setting}
    return run_in_child(action="Fine-tuning", running="Fine-tuning…", done="Fine-tuned", failed="Fine-tuning stopped",
                        target=target, kwargs=kwargs)


@st.fragment
def render(ctx: LessonContext) -> None:
    left, right = st.columns([2, 3], gap="large")
    with left:
        intro("finetune")
        bits = pick(
            st.select_slider, "Bits", "l6.bits", [2, 3, 4, 8], 2, help="Symmetric per-channel grid of 2ⁿ − 1 levels."
        )
        steps = pick(
            st.select_slider,
            "Fine-tuning steps",
            "l6.steps",
            [10, 20, 40, 80],
            40,
            help="Adam steps of 32 training images each.",
        )
        lr = pick(st.select_slider, "Learning rate", "l6.lr", [1e-4, 3e-4, 1e-3], 1e-3, format_func=lambda v: f"{v:g}")
    setting = FineTuneSetting(bits=int(bits), steps=int(steps), learning_rate=float(lr))
    tuned, why_not_loaded = fine_tuning_plan(ctx)
    key = (ctx.model_key if why_not_loaded is None else SAMPLE_FOR_FINE_TUNING, setting)
    with right:
        chart(_ste_figure(ctx.model_key, ctx.layer, int(bits), ctx), "learn.l6.ste")
        if why_not_loaded:
            st.info(f"{why_not_loaded}. This lesson fine-tunes the sample {tuned} on Fashion-MNIST instead.",
                    icon=":material/info:")
        runs = _finished_runs()
        run = runs.get(key)
        if run is None:
            st.caption(f"The run fine-tunes {tuned} for {steps} steps of 32 training images, in a separate process.")
            if st.button(f"Fine-tune {bits}-bit {tuned} for {steps} steps", key="learn.l6.run",
                         icon=":material/model_training:"):
                run = _start(ctx, setting, sample_instead=why_not_loaded is not None)
                if run is not None:
                    runs[key] = run
                    st.rerun()  # redraw without the button, with the loss curve
        if run is not None:
            chart(_loss_figure(key, run), "learn.l6.loss")
    if run is not None:
        recovered = run.recovered
        st.caption(f"{run.model_label}, accuracies on {run.eval_set} — a smaller set than the Model page's baseline, "
                   "so its float accuracy differs from that one by sampling.")
        metrics(
            [
                (
                    "Float accuracy",
                    f"{run.float_accuracy:.1%}",
                    f"Top-1 of the uncompressed {run.model_label} on {run.eval_set}.",
                ),
                (
                    "Rounded, before",
                    f"{run.before_accuracy:.1%}",
                    "Fake-quantized weights, no fine-tuning (data-free).",
                ),
                (
                    "After fine-tuning",
                    f"{run.after_accuracy:.1%}",
                    f"After {steps} steps with the straight-through estimator.",
                ),
                (
                    "Loss recovered",
                    "—" if recovered is None else f"{recovered:.0%}",
                    "Share of the accuracy lost to rounding that fine-tuning won back.",
                ),
                ("Layers rounded", f"{len(run.layers)}", "Every layer with more than 2,048 weights, as Compress does."),
            ]
        )
    st.caption(
        "Forward and gradient from torch.fake_quantize_per_channel_affine (autograd) with coremltools' "
        "symmetric per-channel scale max|w| / (2ⁿ⁻¹ − 1)."
    )
    open_in_compress(
        handoff.from_finetune(bits=int(bits), steps=int(steps), learning_rate=float(lr), batch_size=setting.batch_size),
        key="finetune",
    )
