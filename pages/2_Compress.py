"""Compress: a tab per method with every knob of its spec, per-layer overrides, a run as a job and its result card.

A run is a job (core.jobs): a worker process computes it while this page polls the job row; the result card
appears when the job ends, also after a page switch (the session remembers its jobs)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import streamlit as st

from core.compress.int8_forms import AUTO, FORM_CHOICES, form_fields
from core.compress.layers import weight_layers
from core.compress.registry import method_descriptor
from core.estimate import estimate_seconds, eval_image_count
from core.formatting import fmt_seconds
from core.jobs import CANCELLED, FAILED, QUEUED
from core.measure.layer_summary import layers_compressed_by_default
from core.specs import (
    PalettizeSpec,
    PipelineSpec,
    PruneSpec,
    QuantizeActivationsSpec,
    QuantizeWeightsSpec,
    SpecError,
    TorchDynamicSpec,
    TorchStaticSpec,
    spec_to_yaml,
)
from pages._ui import run_client
from pages._ui.errors import attempt
from pages._ui.loading import forward_ms_per_image
from pages._ui.result_card import result_card
from pages._ui.session import PERSISTENT_PREFIX, eval_limit
from pages._ui.shell import page_context
from pages._ui.storage import records, store
from pages._ui.widgets import eval_limit_selector

model, dataset = page_context()
st.title("Compress", anchor=False)
if model is None:
    st.stop()

model_layers = weight_layers(model.module)
layer_names = list(model_layers)
current_id: int | None = run_client.current_job_id()
current_job = run_client.get_job(current_id) if current_id is not None else None
busy = current_job is not None and not current_job.finished

head = st.columns([2, 1], vertical_alignment="bottom")
head[0].caption(
    f"Compressing **{model.label}** · evaluated on "
    + (f"**{dataset.name}** ({dataset.source})" if dataset else "synthetic inputs (no accuracy)")
    + ". Each run compresses a copy, exports the real artifact, measures it against the baseline and is saved."
)
eval_limit_selector(dataset, container=head[1])

WORKFLOW_LABELS = {
    "data_free": "Data-free — no data, seconds",
    "calibration": "Calibration — a few hundred images",
    "fine_tune": "Fine-tune — training steps, minutes",
}


def knob(widget: Callable[..., Any], prefix: str, name: str, label: str, *, default: Any, help: str, **kwargs: Any) -> Any:
    """A widget whose value survives page switches (cfg.* key) and starts at the spec's default."""
    key = f"{PERSISTENT_PREFIX}{prefix}.{name}"
    st.session_state.setdefault(key, default)
    return widget(label, key=key, help=help, **kwargs)


def workflow_knobs(prefix: str, spec_cls: type, *, allowed: tuple[str, ...] | None = None) -> dict:
    """The workflow and, depending on it, the calibration or fine-tuning budget."""
    workflows = allowed or spec_cls.workflows
    defaults = spec_cls()
    values: dict[str, Any] = {
        "workflow": knob(st.radio, prefix, "workflow", "Workflow", default=workflows[0], options=list(workflows),
                         format_func=WORKFLOW_LABELS.get, horizontal=True,
                         help="Data-free uses only the weights; calibration also looks at real inputs; "
                         "fine-tune trains the compressed model to recover accuracy."),
    }
    if values["workflow"] == "calibration":
        values["calibration_samples"] = knob(
            st.select_slider, prefix, "calibration_samples", "Calibration images", default=defaults.calibration_samples,
            options=[16, 32, 64, 128, 256, 512, 1024, 2048],
            help="Class-balanced images from the training pool (never the evaluation images).")
    if values["workflow"] == "fine_tune":
        c = st.columns(3)
        with c[0]:
            values["epochs"] = knob(st.number_input, prefix, "epochs", "Epochs", default=defaults.epochs, min_value=1, max_value=50,
                                    help="Passes over the fine-tuning images.")
            values["batch_size"] = knob(st.select_slider, prefix, "batch_size", "Batch size", default=defaults.batch_size,
                                        options=[16, 32, 64, 128, 256], help="Images per optimiser step.")
        with c[1]:
            steps = knob(st.number_input, prefix, "max_steps", "Stop after steps (0 = full epochs)", default=0, min_value=0,
                         max_value=100_000, step=50, help="Caps the optimiser steps, to keep demos short.")
            values["max_steps"] = int(steps) or None
            values["learning_rate"] = knob(st.select_slider, prefix, "learning_rate", "Learning rate", default=defaults.learning_rate,
                                           options=[1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3], format_func=lambda v: f"{v:g}",
                                           help="Small: the model is already trained, fine-tuning only repairs it.")
        with c[2]:
            values["train_limit"] = knob(st.select_slider, prefix, "train_limit", "Fine-tuning images", default=defaults.train_limit,
                                         options=[500, 1000, 2000, 5000, 10_000, 20_000, 60_000], format_func=lambda v: f"{v:,}",
                                         help="At most this many training images (fewer if the dataset has fewer).")
    if values["workflow"] != "data_free":
        values["seed"] = knob(st.number_input, prefix, "seed", "Seed", default=0, min_value=0, max_value=2**31 - 1,
                              help="Fixes which images are drawn and the training order: same seed, same result.")
    return values


def overrides_knobs(prefix: str, *, layer_key: str | None = None, layer_widget: Callable[[str], Any] | None = None) -> dict:
    """Per-layer overrides from multiselects of layer names: skip some, or give some a different setting."""
    overrides: dict[str, dict | None] = {}
    with st.expander("Per-layer overrides"):
        skip = knob(st.multiselect, prefix, "skip", "Leave these layers uncompressed", default=[], options=layer_names,
                    help="Sensitive layers (often the first conv and the classifier) can stay in fp16.")
        if layer_key and layer_widget:
            chosen = knob(st.multiselect, prefix, "special", "Use a different setting for these layers", default=[],
                          options=[n for n in layer_names if n not in skip],
                          help="For example more bits for a layer that loses too much accuracy.")
            if chosen:
                value = layer_widget(f"{PERSISTENT_PREFIX}{prefix}.special_value")
                for name in chosen:
                    overrides[f"^{re.escape(name)}$"] = {layer_key: value}
        for name in skip:
            overrides[f"^{re.escape(name)}$"] = None
        if overrides:
            st.caption(f"{len(overrides)} override(s): " + ", ".join(f"`{p}`" for p in overrides))
    return overrides


def bits_for_layers(key: str) -> int:
    st.session_state.setdefault(key, 8)
    return st.select_slider("Bits for those layers", options=[1, 2, 3, 4, 6, 8], key=key, help="Their LUT has 2ⁿ entries.")


def dtype_for_layers(key: str) -> str:
    st.session_state.setdefault(key, "int8")
    return st.radio("Type for those layers", ["int8", "int4"], key=key, horizontal=True,
                    help="e.g. keep a sensitive layer in int8 while the rest is int4.")


def sparsity_for_layers(key: str) -> float:
    st.session_state.setdefault(key, 0.25)
    return float(st.slider("Sparsity for those layers", 0.0, 0.95, step=0.05, key=key, help="e.g. prune a sensitive layer less."))


def threshold_knob(prefix: str, default: int) -> int:
    return knob(st.number_input, prefix, "weight_threshold", "Weight threshold", default=default, min_value=0, max_value=10_000_000,
                step=256, help="Layers with this many weights or fewer stay uncompressed: they save little and are fragile.")


def build(spec_factory: Callable[[], Any]) -> Any:
    try:
        return spec_factory()
    except SpecError as exc:
        st.error(f"These settings are not possible: {exc}", icon=":material/error:")
        return None


def run_footer(spec: Any, tab: str) -> None:
    """Estimate, the spec as YAML, and the Run button of one tab."""
    if spec is None:
        return
    eval_images = eval_image_count(limit=eval_limit(), dataset_size=len(dataset.test) if dataset else None)
    seconds, basis = estimate_seconds(params=model.params, spec=spec, eval_images=eval_images,
                                      history=records(model=model.source_id),
                                      forward_ms_per_image=forward_ms_per_image(model))
    left, right = st.columns([3, 1], vertical_alignment="center")
    with left:
        st.caption(f":material/timer: Estimated run time ≈ **{fmt_seconds(seconds)}** "
                   f"(compress, export, evaluate {eval_images:,} images, time latency) — {basis}.")
        with st.expander("This setting as a spec (YAML)"):
            st.code(spec_to_yaml(spec), language="yaml")
    with right:
        clicked = st.button("Run compression", type="primary", icon=":material/play_arrow:", key=f"run.{tab}",
                            disabled=busy, width="stretch",
                            help="Your previous run is still going (see the sidebar)" if busy else
                            "Runs in a separate worker process; you can switch pages meanwhile.")
    if clicked:
        job_id = attempt("Starting the run", run_client.submit_run, spec=spec, limit=eval_limit())
        if job_id is not None:
            st.rerun()  # redraw with the job: the sidebar's queue and the progress below


# A Learn lesson's "Open Compress" button names the tab to open (core.learn.handoff.COMPRESS_TAB_KEY).
tabs = st.tabs(["Palettize", "Quantize weights", "Activations W8A8", "Prune", "PyTorch int8", "Joint pipeline"],
               default=st.session_state.get("learn.compress_tab"))

# --------------------------------------------------------------------------- palettize
with tabs[0]:
    st.caption(PalettizeSpec.help + ". Fewer bits: smaller file, more rounding error.")
    d = PalettizeSpec()
    c = st.columns(3)
    with c[0]:
        n_bits = knob(st.select_slider, "palettize", "n_bits", "Bits per weight (LUT of 2ⁿ values)", default=d.n_bits,
                      options=[1, 2, 3, 4, 6, 8], help="8 and 6 bits are nearly lossless; 4 needs care; 3 and below usually need calibration or fine-tuning.")
        granularity = knob(st.radio, "palettize", "granularity", "LUT granularity", default=d.granularity,
                           options=["per_tensor", "per_grouped_channel"],
                           format_func={"per_tensor": "one LUT per tensor", "per_grouped_channel": "one LUT per group of output channels"}.get,
                           help="Grouped LUTs fit each group of channels better (coremltools' ResNet50 guide: 4-bit with groups of 16 → 4 channels recovers accuracy).")
        group_size = knob(st.select_slider, "palettize", "group_size", "Channels per group", default=d.group_size,
                          options=[1, 2, 4, 8, 16, 32, 64, 128], disabled=granularity != "per_grouped_channel",
                          help="Output channels sharing one LUT: smaller groups → more LUTs → better accuracy, slightly bigger.")
    with c[1]:
        mode = knob(st.radio, "palettize", "mode", "How the LUT is chosen", default=d.mode, options=["kmeans", "uniform", "unique"],
                    format_func={"kmeans": "k-means clusters", "uniform": "uniform levels", "unique": "unique values"}.get,
                    help="k-means fits the weight distribution; uniform spaces levels evenly (data-free only); "
                    "unique uses the tensor's own values when it has at most 2ⁿ of them.")
        cluster_dim = knob(st.select_slider, "palettize", "cluster_dim", "Vector size (cluster_dim)", default=d.cluster_dim,
                           options=[1, 2, 4, 8], help="Vector palettization: each index selects a vector of this many weights.")
        lut_dtype = knob(st.radio, "palettize", "lut_dtype", "LUT values", default=d.lut_dtype, options=["float", "int8"],
                         format_func={"float": "fp16", "int8": "int8 (quantized LUT)"}.get, horizontal=True,
                         help="Quantizing the LUT itself to int8 is a joint compression: a little smaller again.")
    with c[2]:
        per_channel_scale = knob(st.toggle, "palettize", "enable_per_channel_scale", "Per-channel scale", default=d.enable_per_channel_scale,
                                 help="Normalise each output channel before clustering; helps when channel ranges differ a lot.")
        threshold = threshold_knob("palettize", d.weight_threshold)
    workflow = workflow_knobs("palettize", PalettizeSpec)
    overrides = overrides_knobs("palettize", layer_key="n_bits", layer_widget=bits_for_layers)
    palettize_spec = build(lambda: PalettizeSpec(
        n_bits=n_bits, granularity=granularity, group_size=group_size, enable_per_channel_scale=per_channel_scale,
        cluster_dim=cluster_dim, lut_dtype=lut_dtype, mode=mode, weight_threshold=int(threshold), overrides=overrides, **workflow))
    run_footer(palettize_spec, "palettize")

# --------------------------------------------------------------------------- quantize weights
with tabs[1]:
    st.caption(QuantizeWeightsSpec.help + ". Evenly spaced integer levels instead of a learned LUT.")
    d = QuantizeWeightsSpec()
    c = st.columns(3)
    with c[0]:
        dtype = knob(st.radio, "qw", "dtype", "Integer type", default=d.dtype, options=["int8", "int4"], horizontal=True,
                     help="int8: 256 levels, usually lossless; int4: 16 levels, half the size again.")
        qmode = knob(st.radio, "qw", "mode", "Grid", default=d.mode, options=["symmetric", "asymmetric"], horizontal=True,
                     help="Symmetric grids are centred on zero; asymmetric adds a zero-point for skewed weights.")
    with c[1]:
        qgran = knob(st.radio, "qw", "granularity", "Scale granularity", default=d.granularity, options=["per_channel", "per_block"],
                     format_func={"per_channel": "one scale per output channel", "per_block": "one scale per block of inputs"}.get,
                     help="Blocks follow the weights more closely (better int4 accuracy) at the cost of more scales.")
        block = knob(st.select_slider, "qw", "block_size", "Block size", default=d.block_size, options=[8, 16, 32, 64, 128],
                     disabled=qgran != "per_block", help="Input channels per scale.")
    with c[2]:
        qthreshold = threshold_knob("qw", d.weight_threshold)
    workflow = workflow_knobs("qw", QuantizeWeightsSpec)
    overrides = overrides_knobs("qw", layer_key="dtype", layer_widget=dtype_for_layers)
    qw_spec = build(lambda: QuantizeWeightsSpec(dtype=dtype, granularity=qgran, block_size=block, mode=qmode,
                                                weight_threshold=int(qthreshold), overrides=overrides, **workflow))
    run_footer(qw_spec, "quantize_weights")

# --------------------------------------------------------------------------- W8A8
with tabs[2]:
    st.caption(QuantizeActivationsSpec.help + " (the LinearQuantizer of coremltools' ResNet50 guide). On a Neural Engine this is what runs faster; "
               "on a Linux CPU it is simulated in PyTorch.")
    d = QuantizeActivationsSpec()
    c = st.columns(3)
    with c[0]:
        amode = knob(st.radio, "w8a8", "mode", "Grid", default=d.mode, options=["symmetric", "asymmetric"], horizontal=True,
                     help="Symmetric int8 (as in coremltools' ResNet50 guide) or with a zero-point.")
        aper_channel = knob(st.toggle, "w8a8", "weight_per_channel", "Per-channel weight scales", default=d.weight_per_channel,
                            help="Off: one int8 scale for each whole weight tensor, which must cover its widest "
                            "channel. Depthwise convs (MobileNets) can have very different ranges per channel.")
    with c[1]:
        athreshold = threshold_knob("w8a8", d.weight_threshold)
    workflow = workflow_knobs("w8a8", QuantizeActivationsSpec)
    overrides = overrides_knobs("w8a8")
    w8a8_spec = build(lambda: QuantizeActivationsSpec(mode=amode, weight_per_channel=aper_channel, weight_threshold=int(athreshold),
                                                      overrides=overrides, **workflow))
    run_footer(w8a8_spec, "quantize_activations")

# --------------------------------------------------------------------------- prune
with tabs[3]:
    st.caption(PruneSpec.help + ". The file shrinks once enough weights are zero for sparse storage to pay off.")
    d = PruneSpec()
    c = st.columns(3)
    with c[0]:
        structure = knob(st.radio, "prune", "structure", "Pattern", default=d.structure, options=["unstructured", "block", "n_m"],
                         format_func={"unstructured": "unstructured (any weight)", "block": "blocks of weights", "n_m": "n:m (n of every m)"}.get,
                         help="Unstructured keeps accuracy best; blocks and n:m suit hardware that skips zeros.")
    with c[1]:
        sparsity = knob(st.slider, "prune", "target_sparsity", "Target sparsity", default=d.target_sparsity, min_value=0.0,
                        max_value=0.95, step=0.05, format="percent", disabled=structure == "n_m",
                        help="Fraction of weights set to zero (coremltools' ResNet50 guide tried 50 %, 75 % and 90 %).")
        pblock = knob(st.select_slider, "prune", "block_size", "Block size", default=d.block_size, options=[2, 4, 8, 16],
                      disabled=structure != "block", help="Weights zeroed together.")
    with c[2]:
        n_value = knob(st.number_input, "prune", "n", "n (zeroed)", default=d.n_m[0], min_value=1, max_value=15,
                       disabled=structure != "n_m", help="n of every m consecutive weights are zeroed.")
        m_value = knob(st.number_input, "prune", "m", "m (group)", default=d.n_m[1], min_value=2, max_value=16,
                       disabled=structure != "n_m", help="Group length for n:m sparsity.")
        pthreshold = threshold_knob("prune", d.weight_threshold)
    workflow = workflow_knobs("prune", PruneSpec)
    overrides = overrides_knobs("prune", layer_key="target_sparsity", layer_widget=sparsity_for_layers)
    shape_knobs: dict[str, Any] = {"block_size": pblock} if structure == "block" else {}
    if structure == "n_m":
        shape_knobs["n_m"] = (int(n_value), int(m_value))
    prune_spec = build(lambda: PruneSpec(target_sparsity=float(sparsity), structure=structure, weight_threshold=int(pthreshold),
                                         overrides=overrides, **shape_knobs, **workflow))
    run_footer(prune_spec, "prune")

# --------------------------------------------------------------------------- PyTorch int8
with tabs[4]:
    st.caption("PyTorch's own int8: the only methods here that run on integer CPU kernels, so latency really drops "
               "(as in the PyTorch ResNet-34 quantization report and the PyTorch FX static-quantization guide). "
               "The artifact is TorchScript.")
    kind = knob(st.radio, "torch", "kind", "Kind", default="static", options=["static", "dynamic"], horizontal=True,
                format_func={"static": "static int8 (weights + activations, fused Conv+BN+ReLU)",
                             "dynamic": "dynamic (Linear layers only)"}.get,
                help=TorchStaticSpec.help + " / " + TorchDynamicSpec.help)
    if kind == "static":
        d = TorchStaticSpec()
        c = st.columns(3)
        backend = knob(c[0].selectbox, "torch", "backend", "Backend", default=d.backend, options=["x86", "fbgemm", "qnnpack", "onednn"],
                       help="x86/fbgemm/onednn for Intel and AMD CPUs; qnnpack for ARM. Which is fastest depends on the CPU "
                       "and the model: run each and compare their measured latency ratios on the Compare page.")
        with c[1]:
            per_channel = knob(st.toggle, "torch", "per_channel", "Per-channel weight scales", default=d.per_channel,
                               help="One scale per output channel: better accuracy than one per tensor.")
        workflow = workflow_knobs("torch_static", TorchStaticSpec)
        overrides = overrides_knobs("torch_static")
        form = knob(c[2].selectbox, "torch", "form", "Int8 form", default=AUTO, options=FORM_CHOICES,
                    help="auto: every engine × graph form (GraphModule / traced + frozen TorchScript) is timed once on "
                    "this CPU and the fastest kept; the record says which won and by how much. Or force one form.")
        torch_spec = build(lambda: TorchStaticSpec(backend=backend, per_channel=per_channel, overrides=overrides,
                                                   **form_fields(form), **workflow))
        run_footer(torch_spec, "torch_static")
    else:
        ddtype = knob(st.radio, "torch", "dtype", "Weight type", default="int8", options=["int8", "fp16"], horizontal=True,
                      help="int8 weights with activations quantized on the fly, or fp16 weights.")
        dynamic_spec = build(lambda: TorchDynamicSpec(dtype=ddtype))
        if dynamic_spec is not None and not layers_compressed_by_default(
                model_layers, method=method_descriptor(TorchDynamicSpec.method), spec=dynamic_spec):
            st.info("No layer of this model can be quantized dynamically (PyTorch covers Linear layers only), "
                    "so it would change nothing.", icon=":material/info:")
        run_footer(dynamic_spec, "torch_dynamic")

# --------------------------------------------------------------------------- joint pipeline
with tabs[5]:
    st.caption("Two steps on the same model: prune first, then palettize or quantize the surviving weights "
               "(the order coremltools supports). Sparse + palettized weights compound the savings.")
    c = st.columns(2)
    with c[0]:
        st.markdown("**Step 1 · Prune**")
        p_sparsity = knob(st.slider, "pipe", "sparsity", "Target sparsity", default=0.5, min_value=0.05, max_value=0.95, step=0.05,
                          format="percent", help="Share of weights set to zero before step 2.")
        p_structure = knob(st.radio, "pipe", "structure", "Pattern", default="unstructured", options=["unstructured", "n_m"],
                           horizontal=True, help="n:m uses 2:4 here.")
    with c[1]:
        st.markdown("**Step 2**")
        second = knob(st.radio, "pipe", "second", "Then", default="palettize", options=["palettize", "quantize_weights"],
                      format_func={"palettize": "palettize", "quantize_weights": "quantize weights"}.get, horizontal=True,
                      help="Palettizing the non-zeros keeps the zeros exact (sparse + LUT storage).")
        if second == "palettize":
            p_bits = knob(st.select_slider, "pipe", "n_bits", "Bits", default=4, options=[1, 2, 3, 4, 6, 8],
                          help="LUT size 2ⁿ for the surviving weights.")
        else:
            p_dtype = knob(st.radio, "pipe", "dtype", "Integer type", default="int8", options=["int8", "int4"], horizontal=True,
                           help="Integer grid for the surviving weights.")
    pipe_workflow = knob(st.radio, "pipe", "workflow", "Workflow", default="data_free", options=["data_free", "fine_tune"],
                         format_func=WORKFLOW_LABELS.get, horizontal=True, help="Applied to both steps.")

    def _pipeline() -> PipelineSpec:
        first = PruneSpec(target_sparsity=float(p_sparsity), structure=p_structure, workflow=pipe_workflow)
        step2 = (PalettizeSpec(n_bits=p_bits, workflow=pipe_workflow) if second == "palettize"
                 else QuantizeWeightsSpec(dtype=p_dtype, workflow=pipe_workflow))
        return PipelineSpec((first, step2))

    run_footer(build(_pipeline), "pipeline")

# --------------------------------------------------------------------------- the run and its result


def _record(experiment_id: int) -> dict | None:
    try:
        return store().get(experiment_id)
    except ValueError:  # deleted meanwhile (Compare page)
        return None


def _job_progress() -> None:
    """Polled every half second while the job runs (a fragment): only this part of the page redraws."""
    job = run_client.get_job(current_id)
    if job is None:
        return
    if job.finished:
        if run_client.announce_once(job):
            st.rerun()  # the whole page: result card, sidebar count, history-based estimates
        return
    waiting = job.state == QUEUED
    label = f"{'Queued' if waiting else 'Running'}: {job.label} (job #{job.id})"
    with st.status(label, expanded=True, state="running"):
        elapsed = run_client.elapsed_seconds(job)
        text = job.message if waiting else f"{job.message} · {fmt_seconds(elapsed)}"
        st.progress(min(max(job.progress, 0.0), 1.0), text=text)
        if job.cancel_requested:
            st.caption("Cancelling… the worker stops at its next step; nothing is saved.")
        st.button("Cancel run", key="run.cancel", on_click=run_client.cancel, args=(job.id,), icon=":material/stop_circle:",
                  disabled=job.cancel_requested, help="Stops the job at its next step; nothing of it is saved.")


if current_job is not None:
    st.divider()
    if not current_job.finished:
        st.fragment(run_every=0.5)(_job_progress)()
    elif current_job.state == CANCELLED:
        st.warning(f"Run cancelled ({current_job.label}) — nothing was saved.", icon=":material/cancel:")
    elif current_job.state == FAILED:
        st.error(f"The run {current_job.label} failed: {current_job.error}", icon=":material/error:")
    elif (record := _record(int(current_job.experiment_id))) is not None:
        result_card(record)
    else:
        st.info(f"Experiment #{current_job.experiment_id} of this run was deleted.", icon=":material/info:")
