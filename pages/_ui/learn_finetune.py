"""Learn, lesson 6: fake quantization (straight-through rounding) and a short fine-tuning run with its loss curve."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.learn import figures, handoff
from core.learn.finetune import FineTuneSetting, fine_tune_sample, straight_through
from pages._ui.learn_common import LessonContext, chart, intro, metrics, open_in_compress, pick, run_in_child


@st.cache_resource(show_spinner=False)
def _finished_runs() -> dict:
    """Fine-tuning runs finished in this server process, by setting (a run takes seconds; moving back is instant)."""
    return {}


@st.cache_resource(show_spinner=False)
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
def _loss_figure(setting: FineTuneSetting, _run: Any) -> go.Figure:
    """`_run` is the finished run of `setting` (one per setting in _finished_runs)."""
    return figures.loss_curve_figure(
        losses=_run.losses,
        float_losses=_run.float_losses,
        title=f"Loss while fine-tuning {setting.bits}-bit fashion_cnn ({_run.seconds:.1f} s)",
    )


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
    with right:
        chart(_ste_figure(ctx.model_key, ctx.layer, int(bits), ctx), "learn.l6.ste")
        runs = _finished_runs()
        run = runs.get(setting)
        if run is None:
            st.caption(f"The run fine-tunes the sample fashion_cnn for {steps} steps — seconds on a laptop CPU.")
            if st.button(
                f"Fine-tune {bits}-bit fashion_cnn for {steps} steps",
                key="learn.l6.run",
                icon=":material/model_training:",
            ):
                run = run_in_child(
                    action="Fine-tuning", running="Fine-tuning…", done="Fine-tuned", failed="Fine-tuning stopped",
                    target=fine_tune_sample, kwargs={"setting": setting},
                )
                if run is not None:
                    runs[setting] = run
                    st.rerun()  # redraw without the button, with the loss curve
        if run is not None:
            chart(_loss_figure(setting, run), "learn.l6.loss")
    if run is not None:
        recovered = run.recovered
        metrics(
            [
                (
                    "Float accuracy",
                    f"{run.float_accuracy:.1%}",
                    f"Top-1 on {setting.eval_images} held-out test images.",
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
