"""Learn, lesson 7: where the bytes go — one layer's bits by part, then a real whole-model export read back."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from core.learn import figures, handoff
from core.learn.artifact import where_the_bytes_go_by_reference
from core.learn.palettization import PaletteSetting
from core.learn.pruning import PruneSetting
from core.learn.quantization import LinearSetting
from core.paths import cache_dir
from core.specs import PalettizeSpec, PruneSpec, QuantizeWeightsSpec
from pages._ui import run_client
from pages._ui.learn_common import (
    LessonContext,
    chart,
    compute,
    intro,
    linear_of,
    metrics,
    open_in_compress,
    palette_of,
    pick,
    prune_of,
    run_in_child,
)

METHOD_LABELS = {"palettize": "palettization", "quantize_weights": "integer weights", "prune": "pruning"}
LEVELS: dict[str, tuple[list, Any, str, Callable[[Any], str]]] = {
    "palettize": ([2, 4, 6, 8], 4, "Bits per index", lambda v: f"{v} bits"),
    "quantize_weights": (["int4", "int8"], "int8", "Integer type", str),
    "prune": ([0.5, 0.75, 0.9], 0.75, "Sparsity", lambda v: f"{v:.0%}"),
}


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


def _one_layer(ctx: LessonContext, method: str, level: Any) -> Any:
    """The chosen layer compressed as the whole model will be (cached by setting)."""
    if method == "palettize":
        return palette_of(ctx, PaletteSetting(n_bits=int(level)))
    if method == "quantize_weights":
        return linear_of(ctx, LinearSetting(bits=4 if level == "int4" else 8, granularity="per_channel"))
    return prune_of(ctx, PruneSetting(sparsity=float(level)))


@st.cache_resource(max_entries=64, show_spinner=False)
def _layer_figure(key: str, layer: str, method: str, level: Any, _ctx: LessonContext) -> go.Figure:
    del key, layer  # cache key only (the context carries them)
    one = _one_layer(_ctx, method, level)
    return figures.bits_figure(
        parts=one.storage_bits(),
        weights=_ctx.weight.size,
        title=f"One layer first — {_ctx.layer_title}: bits per weight by part",
    )


@st.cache_resource(max_entries=32, show_spinner=False)
def _bytes_figure(key: tuple[str, str], label: str, summary: str, _made: Any) -> go.Figure:
    """`_made` is the export of `key` (one per key in _exports)."""
    return figures.bytes_check_figure(
        rows=_made.rows(),
        program_bytes=_made.artifact.program_bytes,
        blob_overhead_bytes=_made.artifact.blob_overhead_bytes,
        title=f"{label} · {summary}: the size model vs the exported file",
    )


def _bytes_numbers(made: Any) -> None:
    """The exported package's numbers and its list of stored tensors."""
    artifact = made.artifact
    metrics(
        [
            ("On disk", f"{artifact.total_bytes / 1e6:.3f} MB", "Every file of the exported .mlpackage."),
            (
                "Size model",
                f"{made.theory.total_bytes / 1e6:.3f} MB",
                "core.measure.size: indices, LUTs, scales, masks, fp16.",
            ),
            (
                "Tensor data",
                f"{artifact.data_bytes / 1e6:.3f} MB",
                "Sum of the blob sizes recorded in weight.bin's headers.",
            ),
            (
                "Overhead",
                f"{(artifact.total_bytes - artifact.data_bytes) / 1e3:.1f} kB",
                "Blob headers, alignment, the program description and the manifest.",
            ),
            (
                "vs fp16",
                f"{artifact.total_bytes / made.fp16_bytes:.2f}×",
                "File size ÷ every float of the model at 2 bytes.",
            ),
        ]
    )
    with st.expander(f"The {len(artifact.blobs)} tensors stored in weight.bin"):
        st.dataframe(
            [{"tensor": b.name, "kind": b.kind, "read by": b.consumer, "bytes": b.data_bytes} for b in artifact.blobs],
            hide_index=True,
            width="stretch",
        )
    st.caption(
        f"{made.compressed_layers} of {made.layers} weight layers compressed by core.compress (as the Compress "
        "page), exported by core.export, read back with coremltools' load_spec and the blob headers."
    )


@st.fragment
def render(ctx: LessonContext) -> None:
    model = ctx.model
    left, right = st.columns([2, 3], gap="large")
    with left:
        intro("bytes")
        method = pick(
            st.radio,
            "Compress the whole model by",
            "l7.method",
            list(METHOD_LABELS),
            "palettize",
            horizontal=True,
            format_func=METHOD_LABELS.get,
        )
        values, default, label, fmt = LEVELS[method]
        level = pick(st.select_slider, label, f"l7.{method}", values, default, format_func=fmt)
    spec = _bytes_spec(method, level)
    action = {"palettize": "Palettizing", "quantize_weights": "Quantizing", "prune": "Pruning"}[method]
    layer_figure = compute(action, _layer_figure, ctx.model_key, ctx.layer, method, level, ctx)
    exports = _exports()
    key = (ctx.model_key, repr(spec.to_dict()))
    made = exports.get(key)
    with right:
        if layer_figure is not None:
            chart(layer_figure, "learn.l7.layer")
        if made is None:
            st.caption(
                f"Compressing and exporting {model.label} takes a few seconds to a minute, depending on its size."
            )
            if st.button(
                f"Compress, export and read back ({spec.summary()})",
                key="learn.l7.run",
                icon=":material/deployed_code:",
            ):
                folder = cache_dir() / "learn" / hashlib.sha256(repr(key).encode()).hexdigest()[:16]
                made = run_in_child(
                    action="Exporting", running="Compressing and exporting the whole model…", done="Exported",
                    failed="Export failed", target=where_the_bytes_go_by_reference,
                    kwargs={
                        "model_ref": run_client.model_ref(st.session_state["model_choice"]).to_dict(),
                        "data_ref": run_client.data_ref(st.session_state.get("dataset_choice")).to_dict(),
                        "spec": spec.to_dict(),
                        "out_dir": str(folder),
                    },
                )
                if made is not None:
                    exports[key] = made
                    st.rerun()  # redraw without the button, with the check
        if made is not None:
            chart(_bytes_figure(key, model.label, spec.summary(), made), "learn.l7.bytes")
    if made is not None:
        _bytes_numbers(made)
    open_in_compress(handoff.from_spec(spec), key="bytes")
