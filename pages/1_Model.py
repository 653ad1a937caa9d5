"""Model: choose where the model and the evaluation data come from; see its layers and baseline numbers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core.compress.layers import weight_layers
from core.models.architectures import SAMPLE_ARCHITECTURES
from core.models.sources import TORCHVISION_ARCHITECTURES, list_sources, pretrained_cache_path
from core.store import zip_directory
from pages import _ui

model, dataset = _ui.page_context()
st.title("Model", anchor=False)
st.caption("Pick a model and the images it is judged on. Everything you compress afterwards uses this pair.")

SOURCE_KINDS = {
    "sample": "Sample (trained here)",
    "torchvision": "torchvision architecture",
    "torchscript": "Upload TorchScript",
    "state_dict": "Upload weights",
    "mlpackage": "Upload Core ML package",
}


def _apply_model(choice: dict) -> None:
    """Load first (so a bad file shows its error here), then make it the session's model."""
    loaded = _ui.attempt("Loading the model", _ui.load_choice, choice)
    if loaded is not None:
        st.session_state["model_choice"] = choice
        st.session_state["dataset_choice"] = {"kind": "auto"}
        st.session_state.pop("run_job", None)
        st.toast(f"Loaded {loaded.label}", icon=":material/check_circle:")
        st.rerun()


if model is not None:
    # --------------------------------------------------------------------------- summary
    st.subheader(f":material/deployed_code: {model.label}", anchor=False)
    if not model.accuracy_meaningful:
        st.warning(
            f"**Random or unknown weights** ({model.weights_note}). Accuracy numbers for this model are meaningless; "
            "size, latency and agreement with the uncompressed model are still real.",
            icon=":material/casino:",
        )
    layers = weight_layers(model.module)
    cols = st.columns(5)
    cols[0].metric("Parameters", f"{model.params / 1e6:.2f} M", border=True)
    cols[1].metric("Weight layers", len(layers), border=True)
    cols[2].metric("fp32 size", _ui.fmt_bytes(model.size_fp32_bytes), border=True, help="4 bytes per float parameter or buffer.")
    cols[3].metric("fp16 size", _ui.fmt_bytes(model.size_fp16_bytes), border=True, help="2 bytes per float: what an uncompressed .mlpackage stores.")
    cols[4].metric("Input", "×".join(map(str, model.input_shape)), border=True, help=f"{model.num_classes} output classes")

    base_head = st.columns([3, 1], vertical_alignment="bottom")
    base_head[0].markdown("**Baseline** — the uncompressed model, measured on this machine")
    _ui.eval_limit_selector(dataset, container=base_head[1])
    # Small models are measured at once; big ones (Core ML export of a ResNet-50 takes minutes) on request.
    requested = st.session_state.setdefault("baseline_requested", set())
    if model.params <= 5_000_000 or model.source_id in requested:
        with st.spinner("Measuring the baseline: accuracy, fp16 Core ML export and latency…"):
            baseline = _ui.attempt("Measuring the baseline", _ui.baseline_for, model, dataset)
    else:
        baseline = None
        st.caption(f"{model.params / 1e6:.1f} M parameters: measuring the baseline (fp16 Core ML export, accuracy, "
                   "latency) takes a minute or more, so it starts when you ask. Every compression run measures it anyway.")
        if st.button("Measure baseline", icon=":material/speed:", key="model.baseline"):
            requested.add(model.source_id)
            st.rerun()
    if baseline:
        b = st.columns(5)
        b[0].metric("Top-1 accuracy", _ui.fmt_pct(baseline.get("accuracy_top1")) if model.accuracy_meaningful else "n/a",
                    help=f"on {baseline.get('eval_images') or 'the'} evaluation images")
        b[1].metric("Top-5 accuracy", _ui.fmt_pct(baseline.get("accuracy_top5")) if model.accuracy_meaningful else "n/a")
        b[2].metric("Latency p50", _ui.fmt_num(baseline.get("latency_ms_p50"), ".3f", " ms"),
                    help=f"batch 1, {baseline.get('threads', '?')} CPU threads, PyTorch")
        b[3].metric("Latency p90", _ui.fmt_num(baseline.get("latency_ms_p90"), ".3f", " ms"))
        b[4].metric("fp16 .mlpackage", _ui.fmt_bytes(baseline.get("size_fp16_bytes") or baseline.get("size_bytes")),
                    help="The uncompressed Core ML export, measured on disk: what compression ratios are relative to.")
        for note in baseline.get("notes") or []:
            st.caption(f":material/info: {note}")


choose = st.columns(2)
# --------------------------------------------------------------------------- source
with choose[0].container(border=True):
    st.subheader("Load another model", anchor=False)
    kind = st.radio("Where does the model come from?", list(SOURCE_KINDS), format_func=SOURCE_KINDS.get,
                    horizontal=True, key="cfg.model.kind")
    if kind == "sample":
        samples = {s.source_id: s for s in list_sources() if s.source_id.startswith("sample:")}
        source_id = st.selectbox("Sample model", list(samples), format_func=lambda s: f"{samples[s].label} — {samples[s].description}",
                                 key="cfg.model.sample")
        if st.button("Load sample", type="primary", key="model.load_sample"):
            _apply_model({"source_id": source_id})
    elif kind == "torchvision":
        arch = st.selectbox("Architecture", list(TORCHVISION_ARCHITECTURES), format_func=lambda a: f"{a} — {TORCHVISION_ARCHITECTURES[a]}",
                            key="cfg.model.arch")
        weights_kind = st.radio(
            "Weights", ["random", "pretrained", "file"], horizontal=True, key="cfg.model.tv_weights",
            format_func={"random": "Random initialisation", "pretrained": "Pretrained (local torch hub cache)",
                         "file": "Upload a weights file"}.get,
            help="Random weights are fine for size and latency studies; accuracy needs trained weights.",
        )
        if weights_kind == "pretrained":
            st.caption(f"Looked up at `{pretrained_cache_path(arch)}` — this app never downloads weights.")
        upload = None
        if weights_kind == "file":
            upload = st.file_uploader("state_dict (.pt / .pth) or .safetensors", type=["pt", "pth", "safetensors"], key="model.tv_upload")
        if st.button("Load architecture", type="primary", key="model.load_tv"):
            if weights_kind == "file" and upload is None:
                st.error("Choose a weights file first.", icon=":material/error:")
            elif upload is not None:
                path, digest = _ui.save_upload(upload)
                _apply_model({"source_id": f"state_dict:{arch}:{path}", "hash": digest})
            else:
                _apply_model({"source_id": f"torchvision:{arch}", "pretrained": weights_kind == "pretrained"})
    elif kind == "torchscript":
        st.caption("A model saved with `torch.jit.save(torch.jit.script(model))` or a traced model. Pickled whole models "
                   "(`torch.save(model)`) are refused: loading them would run arbitrary code.")
        upload = st.file_uploader("TorchScript file", type=["pt", "pth", "ts", "zip"], key="model.ts_upload")
        if upload is not None and st.button("Load TorchScript", type="primary", key="model.load_ts"):
            path, digest = _ui.save_upload(upload)
            _apply_model({"source_id": f"torchscript:{path}", "hash": digest})
    elif kind == "state_dict":
        archs = list(SAMPLE_ARCHITECTURES) + list(TORCHVISION_ARCHITECTURES)
        arch = st.selectbox("Architecture the weights belong to", archs, key="cfg.model.sd_arch")
        upload = st.file_uploader("state_dict (.pt / .pth, read with weights_only=True) or .safetensors",
                                  type=["pt", "pth", "safetensors"], key="model.sd_upload")
        if upload is not None and st.button("Load weights", type="primary", key="model.load_sd"):
            path, digest = _ui.save_upload(upload)
            _apply_model({"source_id": f"state_dict:{arch}:{path}", "hash": digest})
    else:
        st.caption(
            "Compress a zipped `.mlpackage` directly with coremltools (data-free palettize, quantize or prune). "
            "Core ML predictions do not run on Linux, so this measures size and per-weight statistics, not accuracy; "
            "the result is not saved as an experiment."
        )
        upload = st.file_uploader("Core ML package (.mlpackage folder, zipped)", type=["zip"], key="model.ml_upload")
        ml_method = st.radio("Method", ["palettize", "quantize_weights", "prune"], horizontal=True, key="cfg.ml.method",
                             format_func={"palettize": "palettize", "quantize_weights": "quantize weights", "prune": "prune"}.get)
        if ml_method == "palettize":
            st.session_state.setdefault("cfg.ml.bits", 4)
            ml_value = st.select_slider("Bits", [1, 2, 3, 4, 6, 8], key="cfg.ml.bits", help="LUT of 2ⁿ values per tensor.")
        elif ml_method == "quantize_weights":
            ml_value = st.radio("Integer type", ["int8", "int4"], horizontal=True, key="cfg.ml.dtype",
                                help="Per-channel symmetric quantization.")
        else:
            st.session_state.setdefault("cfg.ml.sparsity", 0.5)
            ml_value = st.slider("Target sparsity", 0.05, 0.95, step=0.05, key="cfg.ml.sparsity",
                                 help="Fraction of weights set to zero.")
        if upload is not None and st.button("Compress the package", type="primary", key="model.ml_run"):
            from core.export import compress_mlpackage
            from core.specs import PalettizeSpec, PruneSpec, QuantizeWeightsSpec

            ml_spec = {"palettize": lambda: PalettizeSpec(n_bits=ml_value),
                       "quantize_weights": lambda: QuantizeWeightsSpec(dtype=ml_value),
                       "prune": lambda: PruneSpec(target_sparsity=float(ml_value))}[ml_method]()
            path, digest = _ui.save_upload(upload)
            out_path = path.parent / f"{digest}_{ml_method}.mlpackage"
            with st.spinner("Compressing the Core ML package…"):
                outcome = _ui.attempt("Compressing the Core ML package", compress_mlpackage, path=path, spec=ml_spec,
                                      out_path=out_path)
            if outcome is not None:
                st.session_state["mlpackage_result"] = {**outcome, "summary": ml_spec.summary(), "upload": upload.name}
        outcome = st.session_state.get("mlpackage_result")
        if outcome is not None:
            before, after = outcome["original_size_bytes"], outcome["size_bytes"]
            st.success(f"{outcome['upload']}: {outcome['summary']}", icon=":material/check_circle:")
            m = st.columns(3)
            m[0].metric("Original", _ui.fmt_bytes(before))
            m[1].metric("Compressed", _ui.fmt_bytes(after))
            m[2].metric("Smaller by", f"{before / after:.2f}×" if after else "n/a")
            weights = pd.DataFrame(outcome.get("weights") or [])
            if not weights.empty:
                st.dataframe(weights[["name", "role", "shape", "params", "sparsity", "unique_values"]], hide_index=True,
                             key="model.ml_weights", height=240)
            for note in outcome.get("notes") or []:
                st.caption(f":material/info: {note}")
            package = Path(outcome["artifact_path"])
            if package.is_dir():
                st.download_button("Compressed package (.zip)", lambda: zip_directory(package), file_name=f"{package.name}.zip",
                                   mime="application/zip", on_click="ignore", icon=":material/download:", key="model.ml_download")

# --------------------------------------------------------------------------- dataset
with choose[1].container(border=True):
    st.subheader("Evaluation data", anchor=False)
    if model is None:
        st.caption("Load a model first: the data must match its input size and classes.")
    else:
        data_kind = st.radio("Images to measure accuracy on", list(_ui.DATASET_KINDS), format_func=_ui.DATASET_KINDS.get,
                             key="cfg.data.kind", horizontal=False)
        new_choice: dict | None = {"kind": data_kind}
        if data_kind == "folder":
            st.caption("A .zip of `<class name>/<image files>` folders (optionally inside `train/` and `val/`). "
                       f"It needs {model.num_classes} class folders, in the order of the model's outputs (sorted names).")
            upload = st.file_uploader("ImageFolder .zip", type=["zip"], key="data.upload")
            c1, c2, c3 = st.columns(3)
            channels, height, width = model.input_shape
            height = c1.number_input("Image height", 8, 1024, int(height), key="cfg.data.h")
            width = c2.number_input("Image width", 8, 1024, int(width), key="cfg.data.w")
            c3.text_input("Channels", str(channels), disabled=True, help="Fixed by the model's first layer.")
            c4, c5 = st.columns(2)
            mean_text = c4.text_input("Mean per channel", ", ".join(f"{v:g}" for v in model.mean), key="cfg.data.mean")
            std_text = c5.text_input("Std per channel", ", ".join(f"{v:g}" for v in model.std), key="cfg.data.std")
            try:
                mean = [float(v) for v in mean_text.split(",")]
                std = [float(v) for v in std_text.split(",")]
            except ValueError:
                st.error("Mean and std must be comma-separated numbers, e.g. 0.485, 0.456, 0.406.", icon=":material/error:")
                new_choice = None
            if new_choice is not None:
                if upload is None:
                    new_choice = None
                else:
                    path, digest = _ui.save_upload(upload)
                    new_choice.update(path=str(path), hash=digest, size=[int(height), int(width)], channels=int(channels),
                                      mean=mean, std=std)
        if st.button("Use this data", key="data.apply", disabled=new_choice is None):
            loaded = _ui.attempt("Loading the dataset", _ui.load_dataset_choice, new_choice, model)
            if loaded is not None or data_kind in ("none", "auto"):
                st.session_state["dataset_choice"] = new_choice
                st.rerun()
        current = st.session_state.get("dataset_choice", {}).get("kind", "auto")
        st.caption(f"In use: **{_ui.DATASET_KINDS.get(current, current)}** — "
                   + (dataset.describe() if dataset is not None else "synthetic inputs; accuracy is not measured"))
        if dataset is not None and dataset.notes:
            for note in dataset.notes:
                st.caption(f":material/info: {note}")
        if dataset is not None and dataset.license:
            st.caption(dataset.license)

if model is None:
    st.stop()
st.markdown("**Layers with weights**")
table = pd.DataFrame(
    [
        {
            "layer": name,
            "type": type(layer).__name__,
            "shape": "×".join(map(str, layer.weight.shape)),
            "weights": layer.weight.numel(),
            "share of weights": layer.weight.numel() / max(1, sum(m.weight.numel() for m in layers.values())),
            "compressed by default?": "yes" if layer.weight.numel() > 2048 else "no — ≤ 2,048 weights (weight_threshold)",
        }
        for name, layer in layers.items()
    ]
)
st.dataframe(
    table,
    hide_index=True,
    column_config={
        "weights": st.column_config.NumberColumn(format="localized"),
        "share of weights": st.column_config.ProgressColumn(format="percent", min_value=0.0, max_value=1.0),
    },
    key="model.layers",
)
st.page_link("pages/2_Compress.py", label="Next: compress this model", icon=":material/arrow_forward:")
