"""Model: choose where the model and the evaluation data come from; see its layers and baseline numbers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core.compress.layers import weight_layers
from core.compress.registry import coreml_side_methods, method_descriptor, method_label
from core.dataset_choice import DATASET_KINDS
from core.estimate import baseline_is_quick
from core.evaluation import baseline_words
from core.formatting import fmt_bytes, fmt_num, fmt_params, fmt_pct, fmt_seconds, fmt_size_ratio
from core.jobs import CANCELLED, DONE, FAILED, QUEUED, Job
from core.learn.depthwise import accuracy_note
from core.measure.layer_summary import weight_layer_table
from core.models.architectures import sample_description
from core.models.sources import RANDOM_WEIGHTS_MEANING, accuracy_meaning, sample_manifest
from core.models.torchscript_probe import torchscript_disabled_message
from core.progress import is_version_warning, library_version_warnings, split_library_warnings
from core.speedup_wording import spread_note
from core.tables import readable_table
from pages._ui import run_client
from pages._ui.architecture_picker import architecture_picker, state_dict_architecture_picker
from pages._ui.errors import attempt
from pages._ui.loading import (
    baseline_for,
    load_choice,
    load_dataset_choice,
    remember_forward_time,
    torchscript_allowed,
)
from pages._ui.model_card import method_card
from pages._ui.session import eval_limit
from pages._ui.shell import page_context
from pages._ui.spec_form import coreml_side_form
from pages._ui.storage import disk_space_panel, save_upload, store
from pages._ui.uploads import upload_field
from pages._ui.widgets import eval_limit_selector

model, dataset = page_context()
st.title("Model", anchor=False)
for line in library_version_warnings():  # the same on every run here: said once, kept in each record's notes
    st.caption(f":material/warning: {line} (Said once here; every record keeps it in its notes.)")
st.caption("Pick a model and the images it is judged on. Everything you compress afterwards uses this pair.")

SOURCE_KINDS = {
    "architecture": "Architecture (sample, torchvision, timm)",
    "torchscript": "Upload TorchScript",
    "export": "Upload torch.export (.pt2)",
    "onnx": "Upload ONNX",
    "state_dict": "Upload weights",
    "mlpackage": "Upload Core ML package",
}


def by_id_or_none(experiment_id: int) -> dict | None:
    """A saved experiment, or None when it was deleted meanwhile."""
    try:
        return store().get(experiment_id)
    except ValueError:
        return None


def _job_progress(job_id: int, *, what: str, cancel_key: str) -> None:
    """Polled while a job of this page runs (a fragment): its progress and Cancel; the app reruns when it ends."""
    job = run_client.get_job(job_id)
    if job is None:
        return
    if job.finished:
        if run_client.announce_once(job):
            st.rerun()  # the whole page: the result, the sidebar's experiment count
        return
    waiting = job.state == QUEUED
    detail = job.message if waiting else f"{job.message} · {fmt_seconds(run_client.elapsed_seconds(job))}"
    st.progress(min(max(job.progress, 0.0), 1.0), text=f"{what} in a worker (job #{job.id}): {detail}")
    st.button("Cancel", key=cancel_key, on_click=run_client.cancel, args=(job.id,), icon=":material/stop_circle:",
              disabled=job.cancel_requested, help="Stops the job at its next step; nothing of it is kept.")


def _baseline_from_job(*, start: bool) -> tuple[Job | None, dict | None]:
    """No cached baseline yet: follow (or, if `start`, queue) the job that measures it: (the job, its record once
    done). No job: (None, None)."""
    job: Job | None = attempt("Starting the baseline", run_client.baseline_job, limit=eval_limit(), label=model.label,
                              start=start)
    if job is None:
        return None, None
    if not job.finished:
        st.fragment(run_every=0.5)(_job_progress)(job.id, what="Measuring the baseline", cancel_key="model.baseline_cancel")
        return job, None
    if job.state == DONE:
        return job, (job.result or {}).get("record")  # the cache has it too; this covers a cache emptied meanwhile
    if job.state == FAILED:
        st.error(f"Measuring the baseline failed: {job.error}", icon=":material/error:")
    elif job.state == CANCELLED:
        st.info("Baseline measurement cancelled.", icon=":material/cancel:")
    if st.button("Measure again", icon=":material/refresh:", key="model.baseline_retry"):
        run_client.forget_baseline_job(limit=eval_limit())
        st.session_state.setdefault("baseline_requested", set()).add(model.source_id)
        st.rerun()
    return job, None


def _apply_model(choice: dict) -> None:
    """Load first (so a bad file shows its error here), then make it the session's model."""
    loaded = attempt("Loading the model", load_choice, choice)
    if loaded is not None:
        st.session_state["model_choice"] = choice
        st.session_state["dataset_choice"] = {"kind": "auto"}
        st.session_state.pop("jobs.current", None)  # pages/_ui/run_client.CURRENT_JOB_KEY
        st.toast(f"Loaded {loaded.label}", icon=":material/check_circle:")
        st.rerun()


if model is not None:
    # --------------------------------------------------------------------------- summary
    st.subheader(f":material/deployed_code: {model.label}", anchor=False)
    meaning = accuracy_meaning(accuracy_meaningful=model.accuracy_meaningful, weights_note=model.weights_note)
    if meaning:
        how = model.weights_note.removesuffix(f" — {RANDOM_WEIGHTS_MEANING}")  # the meaning is already in bold
        st.warning(f"**{meaning}** ({how})", icon=":material/casino:")
    layers = weight_layers(model.module)
    cols = [*st.columns(3), *st.columns(3)[:2]]  # five bordered values in one row lose their units on a laptop
    cols[0].metric("Parameters", fmt_params(model.params), border=True)
    cols[1].metric("Weight layers", len(layers), border=True)
    cols[2].metric("fp32 size", fmt_bytes(model.size_fp32_bytes), border=True, help="4 bytes per float parameter or buffer.")
    cols[3].metric("fp16 size", fmt_bytes(model.size_fp16_bytes), border=True, help="2 bytes per float: what an uncompressed .mlpackage stores.")
    cols[4].metric("Input", "×".join(map(str, model.input_shape)), border=True, help=f"{model.num_classes} output classes")

    method_card(model)

    base_head = st.columns([3, 1], vertical_alignment="bottom")
    base_head[0].markdown("**Baseline** — the uncompressed model, measured on this machine")
    eval_limit_selector(dataset, container=base_head[1])
    if len(model.input_shape) >= 2 and model.input_shape[-1] * model.input_shape[-2] > 64 * 64:
        st.checkbox("Also time a batch of 8 images", key=run_client.LARGE_BATCH_KEY,
                    help="Latency is timed at batch 1; this adds batch 8 to the baseline and every run (about "
                    "twice as long a latency phase).")
    # A worker process measures the baseline (a job); this page reads the cached record or follows the job.
    # Small models are measured at once; big ones (Core ML export of a ResNet-50 takes minutes) on request.
    requested = st.session_state.setdefault("baseline_requested", set())
    baseline = attempt("Reading the baseline", baseline_for, model, dataset)
    if baseline is None:
        quick = baseline_is_quick(model.params) or model.source_id in requested
        job, baseline = _baseline_from_job(start=quick)
        if baseline is not None:
            remember_forward_time(model, baseline)
        elif job is None:
            st.caption(f"{fmt_params(model.params, 1)} parameters: measuring the baseline (fp16 Core ML export, "
                       "accuracy, latency) takes a minute or more, so it starts when you ask. Every compression run "
                       "measures it anyway.")
            if st.button("Measure baseline", icon=":material/speed:", key="model.baseline"):
                requested.add(model.source_id)
                st.rerun()
    if baseline:
        # Two rows: five latency-length values ("417.546 ms") side by side lose their units on a laptop screen.
        first, second = st.columns(3), st.columns(3)
        b = [first[0], first[1], second[0], second[1], first[2]]  # accuracy and size, then the two latencies
        b[0].metric("Top-1 accuracy", fmt_pct(baseline.get("accuracy_top1")) if model.accuracy_meaningful else "n/a",
                    help=f"on {baseline.get('eval_images') or 'the'} evaluation images")
        b[1].metric("Top-5 accuracy", fmt_pct(baseline.get("accuracy_top5")) if model.accuracy_meaningful else "n/a")
        b[2].metric("Latency p50", fmt_num(baseline.get("latency_ms_p50"), ".3f", " ms"),
                    help=f"batch 1, {baseline.get('threads', '?')} CPU threads, PyTorch")
        b[3].metric("Latency p90", fmt_num(baseline.get("latency_ms_p90"), ".3f", " ms"),
                    help="9 in 10 calls finished within this time; far above the p50 means other work interrupted "
                    "some calls.")
        b[4].metric("fp16 .mlpackage", fmt_bytes(baseline.get("size_fp16_bytes") or baseline.get("size_bytes")),
                    help="The uncompressed Core ML export, measured on disk: what compression ratios are relative to.")
        if words := baseline_words(baseline):
            st.caption(f":material/target: {words[0].upper()}{words[1:]} — every result measured on these images is "
                       "compared with it (Compress, Compare); other pages say which images their baseline used.")
        if busy := spread_note(baseline.get("latency")):
            st.caption(f":material/speed: {busy}")
        library_warnings, other_notes = split_library_warnings(baseline.get("notes"), versions=False)
        for note in other_notes:
            if not is_version_warning(note):  # said once below the page title
                st.caption(f":material/info: {note}")
        if library_warnings:
            st.caption(":material/warning: Library warnings: " + " · ".join(library_warnings))


def _model_file_upload(label: str, *, types: list[str], key: str, button: str, prefix: str) -> None:
    """A streamed upload of a model file and its Load button: the saved file becomes the model `<prefix>:<path>`."""
    upload = upload_field(label, type=types, key=f"model.{key}_upload")
    if upload is not None and st.button(button, type="primary", key=f"model.load_{key}"):
        path, digest = save_upload(upload)
        _apply_model({"source_id": f"{prefix}:{path}", "hash": digest})


choose = st.columns(2)
if run_client.mlpackage_job_id() is not None:  # a reload with ?mljob=N: show that job's package section again
    st.session_state.setdefault("cfg.model.kind", "mlpackage")
# --------------------------------------------------------------------------- source
with choose[0].container(border=True):
    st.subheader("Load another model", anchor=False)
    kind = st.radio("Where does the model come from?", list(SOURCE_KINDS), format_func=SOURCE_KINDS.get,
                    horizontal=True, key="cfg.model.kind")
    if kind == "architecture":
        # every route's architectures, searchable by typing; it starts on the loaded model
        pick = architecture_picker(key="cfg.model.arch", loaded=model.source_id if model is not None else None)
        if pick is not None and pick.route == "sample":  # what each sample shows, with its measured int8 numbers
            st.caption(sample_description(pick.name))
            if int8_note := accuracy_note(sample_manifest().get(pick.name, {})):
                st.caption(int8_note)
        if pick is not None and st.button("Load model", type="primary", key="model.load_arch"):
            if pick.weights == "file" and pick.upload is None:
                st.error("Choose a weights file first.", icon=":material/error:")
            elif pick.upload is not None:
                path, digest = save_upload(pick.upload)
                _apply_model(pick.choice_with_file(path=str(path), digest=digest))
            else:
                _apply_model(pick.choice())
    elif kind == "torchscript":
        st.warning("**A TorchScript file is a program**, not just weights: loading it runs code from the file on this "
                   "server. Upload only files you trust. It is loaded first in a separate process with a time and "
                   "memory limit, which stops runaway files but is not a sandbox.", icon=":material/security:")
        if not torchscript_allowed():
            st.info(torchscript_disabled_message(), icon=":material/block:")
        else:
            st.caption("A model saved with `torch.jit.save(torch.jit.script(model))` or a traced model. Pickled whole "
                       "models (`torch.save(model)`) are refused: loading them would run arbitrary code.")
            _model_file_upload("TorchScript file", types=["pt", "pth", "ts", "zip"], key="ts", button="Load TorchScript",
                               prefix="torchscript")
    elif kind == "export":
        st.warning("**A .pt2 file can run code when it loads**: `torch.export.load` reads its graph as data, but "
                   "unpickles some weights and constants (`torch.load(weights_only=False)` / `pickle`). Upload only files "
                   "you trust. It is loaded first in a separate process with a time and memory limit.",
                   icon=":material/security:")
        if not torchscript_allowed():
            st.info(torchscript_disabled_message(), icon=":material/block:")
        else:
            st.caption("A program saved with `torch.export.save(torch.export.export(model, (example,)), 'model.pt2')`. "
                       "Its convolutions and linear layers become real layers, so every weight method applies.")
            _model_file_upload("torch.export program (.pt2)", types=["pt2"], key="ep", button="Load program",
                               prefix="export")
    elif kind == "onnx":
        st.caption("An ONNX model (`torch.onnx.export`, or any exporter). It is parsed, never executed, and converted "
                   "to PyTorch layers with onnx2torch; an operator the converter lacks is named.")
        _model_file_upload("ONNX model (.onnx)", types=["onnx"], key="onnx", button="Load ONNX", prefix="onnx")
    elif kind == "state_dict":
        arch = state_dict_architecture_picker(key="cfg.model.sd_arch")
        upload = upload_field("state_dict (.pt / .pth, read with weights_only=True) or .safetensors",
                              type=["pt", "pth", "safetensors"], key="model.sd_upload")
        if upload is not None and st.button("Load weights", type="primary", key="model.load_sd"):
            path, digest = save_upload(upload)
            _apply_model({"source_id": f"state_dict:{arch}:{path}", "hash": digest})
    else:
        st.caption(
            "Compress a zipped `.mlpackage` directly with coremltools (data-free palettize, quantize or prune). "
            "Core ML predictions do not run on Linux, so this measures size and per-weight statistics, not accuracy; "
            "the result is saved as an experiment of its own."
        )
        upload = upload_field("Core ML package (.mlpackage folder, zipped)", type=["zip"], key="model.ml_upload")
        ml_method = st.radio("Method", coreml_side_methods(), horizontal=True, key="cfg.ml.method",
                             format_func=method_label)  # data-free on Core ML
        ml_spec = coreml_side_form(ml_method)  # the method's Core ML-side knob, from its spec's metadata
        if upload is not None and ml_spec is not None and st.button("Compress the package", type="primary",
                                                                     key="model.ml_run"):
            path, _ = save_upload(upload)
            # A worker compresses it (a job in the shared queue): progress and Cancel here and in the sidebar.
            if attempt("Compressing the Core ML package", run_client.submit_mlpackage, path=path, spec=ml_spec,
                       name=Path(upload.name).stem) is not None:
                st.rerun()  # redraw with the job: the sidebar's queue and the progress below
        ml_id = run_client.mlpackage_job_id()
        ml_job = run_client.get_job(ml_id) if ml_id is not None else None
        record = None
        if ml_job is not None and not ml_job.finished:
            st.fragment(run_every=0.5)(_job_progress)(ml_job.id, what="Compressing the Core ML package",
                                                      cancel_key="model.ml_cancel")
        elif ml_job is not None and ml_job.state == FAILED:
            st.error(f"Compressing the Core ML package failed: {ml_job.error}", icon=":material/error:")
        elif ml_job is not None and ml_job.state == CANCELLED:
            st.warning("Compressing the Core ML package was cancelled — nothing was saved.", icon=":material/cancel:")
        elif ml_job is not None and ml_job.experiment_id is not None:
            record = by_id_or_none(int(ml_job.experiment_id))
        if record is not None:
            st.success(f"{ml_job.model_ref.name}: {record.get('spec_summary')} — saved as experiment "
                       f"**#{record['id']}**", icon=":material/check_circle:")
            m = st.columns(3)
            m[0].metric("Original", fmt_bytes(record.get("size_fp16_bytes")))
            m[1].metric("Compressed", fmt_bytes(record.get("size_bytes")))
            m[2].metric("Size vs the original", fmt_size_ratio(record.get("compression_ratio_fp16")))
            weights = pd.DataFrame(record.get("coreml_weights") or [])
            if not weights.empty:
                st.dataframe(readable_table(weights[["name", "role", "shape", "params", "sparsity", "unique_values"]],
                                            formats={"sparsity": lambda v: fmt_pct(v, 1)}), hide_index=True,
                             key="model.ml_weights", height=240)
            for note in record.get("notes") or []:
                st.caption(f":material/info: {note}")
            experiment_id = int(record["id"])
            st.download_button("Compressed package (.zip)", lambda: store().artifact_download(experiment_id)[0],
                               file_name=f"experiment{experiment_id}_model.mlpackage.zip", mime="application/zip",
                               on_click="ignore", icon=":material/download:", key="model.ml_download")

# --------------------------------------------------------------------------- dataset
with choose[1].container(border=True):
    st.subheader("Evaluation data", anchor=False)
    if model is None:
        st.caption("Load a model first: the data must match its input size and classes.")
    else:
        data_kind = st.radio("Images to measure accuracy on", list(DATASET_KINDS), format_func=DATASET_KINDS.get,
                             key="cfg.data.kind", horizontal=False)
        new_choice: dict | None = {"kind": data_kind}
        if data_kind == "folder":
            st.caption("A .zip of `<class name>/<image files>` folders (optionally inside `train/` and `val/`). "
                       f"It needs {model.num_classes} class folders, in the order of the model's outputs (sorted names).")
            upload = upload_field("ImageFolder .zip", type=["zip"], key="data.upload")
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
                    path, digest = save_upload(upload)
                    new_choice.update(path=str(path), hash=digest, size=[int(height), int(width)], channels=int(channels),
                                      mean=mean, std=std)
        if st.button("Use this data", key="data.apply", disabled=new_choice is None):
            loaded = attempt("Loading the dataset", load_dataset_choice, new_choice, model)
            if loaded is not None or data_kind in ("none", "auto"):
                st.session_state["dataset_choice"] = new_choice
                st.rerun()
        current = st.session_state.get("dataset_choice", {}).get("kind", "auto")
        st.caption(f"In use: **{DATASET_KINDS.get(current, current)}** — "
                   + (dataset.describe() if dataset is not None else "synthetic inputs; accuracy is not measured"))
        if dataset is not None and dataset.notes:
            for note in dataset.notes:
                st.caption(f":material/info: {note}")
        if dataset is not None and dataset.license:
            st.caption(dataset.license)

if model is not None:
    st.markdown("**Layers with weights**")
    DEFAULT_METHOD = method_descriptor("palettize")  # the Home page's suggested first step
    st.dataframe(
        weight_layer_table(layers, method=DEFAULT_METHOD),
        hide_index=True,
        column_config={
            "weights": st.column_config.NumberColumn(format="localized"),
            "share of weights": st.column_config.ProgressColumn(format="percent", min_value=0.0, max_value=1.0),
            "compressed by default?": st.column_config.TextColumn(
                help=f"With {DEFAULT_METHOD.label}'s default settings; each method has its own rules (Compress page)."),
        },
        key="model.layers",
    )
    st.page_link("pages/2_Compress.py", label="Next: compress this model", icon=":material/arrow_forward:")

# --------------------------------------------------------------------------- disk
with st.expander("Disk space", icon=":material/hard_drive:"):
    disk_space_panel(key="model.disk")
