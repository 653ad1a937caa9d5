"""What every Learn lesson shares: the lesson context, cached computations, widget helpers and rendering helpers.

Speed (a slider move must re-render in ≤ 0.3 s on a 590k-weight layer, or the lesson feels broken): each lesson is an ``st.fragment``,
so a slider move reruns only that lesson, not the router, the sidebar and the page head; everything a lesson
computes from a setting — the library's result, its figures and its numbers — is cached under small keys
(model key, layer name, a frozen setting), so a setting seen before is drawn without touching the 590k weights
or building a Plotly figure again. Cached objects are shared, never mutated. The charts are live charts
(pages/_ui/live_chart.py: redrawn in place, once, instead of a new chart element drawn twice), and the server no
longer holds the GIL for a full garbage collection after every run (.streamlit/config.toml, shell.settle_heap).
Measured by ``python -m bench.learn_rerender`` in a real browser, until the charts have finished drawing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.data import Dataset
from core.isolated import IsolatedError, run_isolated
from core.learn import figures, handoff
from core.learn.lessons import lesson
from core.learn.palettization import PaletteSetting, palettize
from core.learn.pruning import PruneSetting, prune, sparsity_curve
from core.learn.quantization import LinearSetting, linear_quantize, with_outlier
from core.learn.tensors import TOY_NAME, LayerChoice, layer_weight, toy_tensor
from core.models.sources import LoadedModel
from pages._ui.live_chart import live_chart

PREFIX = "cfg.learn."  # cfg.* values survive page switches
TOY = "__toy__"
CHART_CONFIG = {"displaylogo": False}


@dataclass(frozen=True)
class LessonContext:
    """What a lesson works on: the loaded model, its dataset and the chosen weights (passed to each fragment)."""

    model: LoadedModel
    dataset: Dataset | None
    model_key: str  # identifies the loaded model in cache keys (a string: hashing it is free)
    choices: tuple[LayerChoice, ...]
    layer: str
    by_name: dict[str, LayerChoice] = field(default_factory=dict, compare=False)

    @property
    def weight(self) -> np.ndarray:
        return weight_of(self, self.layer)

    @property
    def layer_title(self) -> str:
        return TOY_NAME if self.layer == TOY else self.layer


# --------------------------------------------------------------------------- cached computations


@st.cache_resource(max_entries=16, show_spinner=False)
def _weight(key: str, layer: str, _module: Any) -> np.ndarray:
    del key  # part of the cache key only
    return toy_tensor() if layer == TOY else layer_weight(_module, name=layer)


def weight_of(ctx: LessonContext, layer: str) -> np.ndarray:
    return _weight(ctx.model_key, layer, ctx.model.module)


@st.cache_resource(max_entries=64, show_spinner=False)
def _histogram(key: str, layer: str, bins: int, _ctx: LessonContext) -> tuple[np.ndarray, np.ndarray]:
    del key
    return figures.histogram(weight_of(_ctx, layer), bins=bins)


def histogram_of(ctx: LessonContext, bins: int = 120) -> tuple[np.ndarray, np.ndarray]:
    return _histogram(ctx.model_key, ctx.layer, bins, ctx)


@st.cache_resource(max_entries=64, show_spinner=False)
def _linear(
    key: str, layer: str, setting: LinearSetting, outlier: tuple[int, float] | None, _ctx: LessonContext
) -> Any:
    del key
    weight = weight_of(_ctx, layer)
    if outlier is not None:
        weight = with_outlier(weight, channel=outlier[0], factor=outlier[1])
    return linear_quantize(weight, setting)


def linear_of(ctx: LessonContext, setting: LinearSetting, outlier: tuple[int, float] | None = None) -> Any:
    return _linear(ctx.model_key, ctx.layer, setting, outlier, ctx)


@st.cache_resource(max_entries=32, show_spinner="Running coremltools' k-means on this layer…")
def _palette(key: str, layer: str, setting: PaletteSetting, _ctx: LessonContext) -> Any:
    del key
    return palettize(weight_of(_ctx, layer), setting)


def palette_of(ctx: LessonContext, setting: PaletteSetting) -> Any:
    return _palette(ctx.model_key, ctx.layer, setting, ctx)


@st.cache_resource(max_entries=32, show_spinner=False)
def _prune(key: str, layer: str, setting: PruneSetting, _ctx: LessonContext) -> Any:
    del key
    return prune(weight_of(_ctx, layer), setting)


def prune_of(ctx: LessonContext, setting: PruneSetting) -> Any:
    return _prune(ctx.model_key, ctx.layer, setting, ctx)


@st.cache_resource(max_entries=16, show_spinner="Pruning at 19 sparsities for the curve…")
def _curve(key: str, layer: str, structure: str, block: int, _ctx: LessonContext) -> tuple[np.ndarray, np.ndarray]:
    del key
    return sparsity_curve(weight_of(_ctx, layer), structure=structure, block_size=block)


def curve_of(ctx: LessonContext, structure: str, block: int) -> tuple[np.ndarray, np.ndarray]:
    return _curve(ctx.model_key, ctx.layer, structure, block, ctx)


def compute(action: str, fn: Callable[..., Any], *args: Any) -> Any:
    """A lesson computation; a setting the library refuses becomes a message naming what to change."""
    try:
        return fn(*args)
    except ValueError as exc:
        st.warning(f"{action}: {exc}", icon=":material/info:")
        return None
    except IsolatedError as exc:  # the job running it failed, or its worker died
        st.error(f"{action} failed: {exc}", icon=":material/error:")
        return None


def run_in_child(*, action: str, running: str, done: str, failed: str, target: Callable[..., Any],
                 kwargs: dict[str, Any]) -> Any:
    """A whole-model step as a job a worker runs (core.isolated: the Streamlit process never compresses, exports or
    trains itself), waited for under a status box with a progress bar; its result, or None after a message."""
    with st.status(running, expanded=True) as status:
        bar = st.progress(0.0)
        result = compute(
            action,
            lambda: run_isolated(target, kwargs=kwargs, progress=lambda f, m: bar.progress(min(f, 1.0), text=m)),
        )
        status.update(label=done if result else failed, state="complete" if result else "error", expanded=False)
    return result


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
        st.switch_page("pages/2_Compress.py")  # a full-app rerun, also from inside a lesson's fragment


# --------------------------------------------------------------------------- rendering

Metric = tuple[str, str, str | None]


def chart(figure: go.Figure, key: str) -> None:
    """A lesson's chart, redrawn in place when a slider moves (pages/_ui/live_chart.py says why not st.plotly_chart)."""
    live_chart(figure, key=key, config=CHART_CONFIG)


def metrics(items: list[Metric] | tuple[Metric, ...]) -> None:
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
