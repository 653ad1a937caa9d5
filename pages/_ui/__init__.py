"""What every page shares: cached core objects, per-session choices, friendly errors, the sidebar and the run job.

Pages stay thin: they read widgets, build a spec, call these helpers and render. Nothing here computes a
metric; it only loads, caches and presents what `core` returns.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import statistics
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import streamlit as st

from core.data import Dataset, DatasetError, load_bundled_subset, load_fashion_mnist, load_image_folder
from core.models.sources import FASHION_MNIST, LoadedModel, load_model
from core.progress import Cancelled, Progress
from core.specs import AnySpec
from core.store import ExperimentStore, default_home

LOG = logging.getLogger("compression_studio.ui")
T = TypeVar("T")

DEFAULT_MODELS = tuple(
    m for m in (os.environ.get("COMPRESSION_STUDIO_DEFAULT_MODEL"), "sample:fashion_resnet", "sample:fashion_cnn") if m
)
EVAL_LIMIT_OPTIONS = {500: "500 images (fastest)", 2000: "2,000 images (quick)", 0: "full test set"}
DEFAULT_EVAL_LIMIT = 2000
PERSISTENT_PREFIX = "cfg."  # widget keys that keep their value when the user switches pages

DATASET_KINDS = {
    "auto": "The model's own dataset (best available copy)",
    "bundled": "Bundled Fashion-MNIST subset (always available)",
    "full": "Full Fashion-MNIST (10,000 test images)",
    "folder": "Your images: an ImageFolder .zip",
    "none": "None — synthetic inputs (size and latency only)",
}


# --------------------------------------------------------------------------- session


def init_session() -> None:
    """Defaults for a new browser session, and keep configured widget values across page switches."""
    state = st.session_state
    state.setdefault("session_id", uuid.uuid4().hex)
    state.setdefault("model_choice", None)
    state.setdefault("dataset_choice", {"kind": "auto"})
    state.setdefault(f"{PERSISTENT_PREFIX}eval_limit", DEFAULT_EVAL_LIMIT)
    # Streamlit forgets a widget's value when its page is not shown; re-assigning keeps it (documented pattern).
    for key in list(state.keys()):
        if isinstance(key, str) and key.startswith(PERSISTENT_PREFIX):
            state[key] = state[key]


def eval_limit() -> int | None:
    """How many evaluation images runs use (None: the whole test split)."""
    value = int(st.session_state.get(f"{PERSISTENT_PREFIX}eval_limit", DEFAULT_EVAL_LIMIT))
    return None if value <= 0 else value


def eval_limit_selector(dataset: Dataset | None, *, container: Any = None) -> None:
    """The evaluation-size setting, shared by the Model and Compress pages."""
    where = container or st
    total = len(dataset.test) if dataset is not None else None
    where.selectbox(
        "Evaluation images",
        options=list(EVAL_LIMIT_OPTIONS),
        format_func=lambda v: EVAL_LIMIT_OPTIONS[v] if v or total is None else f"full test set ({total:,})",
        key=f"{PERSISTENT_PREFIX}eval_limit",
        help="Fewer images keep demos quick; the full test set gives the most precise accuracy. "
        "The same images are used for the baseline and every experiment.",
    )


# --------------------------------------------------------------------------- errors


def friendly_message(exc: BaseException, action: str) -> str:
    """A message for the page: our ValueErrors already say what to do; anything else gets a generic hint."""
    if isinstance(exc, ValueError):
        return f"{action} failed: {exc}"
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    if isinstance(exc, MemoryError):
        hint = "The machine ran out of memory: use a smaller model, fewer evaluation images or a smaller batch."
    elif isinstance(exc, OSError):
        hint = "A file could not be read or written: check free disk space and that the data folder is writable."
    else:
        hint = "Try other settings or another model; the app keeps working and nothing saved was lost."
    return f"{action} failed ({type(exc).__name__}: {first}). {hint}"


def attempt(action: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Run a core call; on failure show st.error (never a traceback) and return None."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # every failure becomes a message; details go to the server log
        LOG.warning("%s failed:\n%s", action, traceback.format_exc())
        st.error(friendly_message(exc, action), icon=":material/error:")
        return None


# --------------------------------------------------------------------------- cached core objects


@st.cache_resource(show_spinner=False)
def _store(home: str) -> ExperimentStore:
    return ExperimentStore(Path(home))


def store() -> ExperimentStore:
    return _store(str(default_home()))


@st.cache_resource(show_spinner="Loading the model…", max_entries=12)
def _model(source_id: str, weights: str | None, content_hash: str | None, pretrained: bool) -> LoadedModel:
    # content_hash is part of the cache key only: the same file name with new content is a new model.
    del content_hash
    return load_model(source_id, weights=Path(weights) if weights else None, pretrained=pretrained)


def load_choice(choice: dict) -> LoadedModel:
    return _model(choice["source_id"], choice.get("weights"), choice.get("hash"), bool(choice.get("pretrained")))


@st.cache_resource(show_spinner="Loading the dataset…", max_entries=8)
def _dataset(kind: str, path: str | None, content_hash: str | None, size: tuple[int, int] | None, channels: int | None,
             mean: tuple[float, ...] | None, std: tuple[float, ...] | None, classes: int | None) -> Dataset:
    del content_hash
    if kind in ("auto", "fashion"):
        return load_fashion_mnist()
    if kind == "bundled":
        return load_bundled_subset()
    if kind == "full":
        found = load_fashion_mnist(allow_download=False)
        if found.source.startswith("bundled"):
            raise DatasetError(
                "the full Fashion-MNIST test set was not found. Install Debian's dataset-fashion-mnist package or put "
                "the four IDX files in data/fashion-mnist/, then reload; meanwhile the bundled subset works."
            )
        return found
    if kind == "folder":
        if not path or size is None or channels is None or mean is None or std is None:
            raise DatasetError("choose an ImageFolder .zip and its input size and normalisation first.")
        return load_image_folder(Path(path), image_size=size, channels=channels, mean=mean, std=std, expected_classes=classes)
    raise DatasetError(f"unknown dataset choice {kind!r}.")


def load_dataset_choice(choice: dict, model: LoadedModel) -> Dataset | None:
    """The dataset the session chose for this model (None: synthetic inputs); raises DatasetError if it does not fit."""
    kind = choice.get("kind", "auto")
    if kind == "none" or (kind == "auto" and model.dataset != FASHION_MNIST):
        return None
    dataset = _dataset(
        kind,
        choice.get("path"),
        choice.get("hash"),
        tuple(choice["size"]) if choice.get("size") else None,
        choice.get("channels"),
        tuple(choice["mean"]) if choice.get("mean") else None,
        tuple(choice["std"]) if choice.get("std") else None,
        model.num_classes if kind == "folder" else None,
    )
    if dataset.input_shape != tuple(model.input_shape):
        raise DatasetError(
            f"{dataset.name} has images of {'×'.join(map(str, dataset.input_shape))} but {model.label} expects "
            f"{'×'.join(map(str, model.input_shape))}; choose a matching dataset or input size."
        )
    if dataset.num_classes != model.num_classes:
        raise DatasetError(
            f"{dataset.name} has {dataset.num_classes} classes but {model.label} has {model.num_classes} outputs."
        )
    return dataset


def current_model() -> LoadedModel | None:
    """The session's model; the first visit loads the default sample. Shows an error and returns None on failure."""
    choice = st.session_state.get("model_choice")
    if choice is not None:
        return attempt("Loading the model", load_choice, choice)
    errors = []
    for source_id in DEFAULT_MODELS:
        candidate = {"source_id": source_id}
        try:
            model = load_choice(candidate)
        except Exception as exc:  # try the next default; report all if none loads
            errors.append(str(exc))
            continue
        st.session_state["model_choice"] = candidate
        return model
    st.error("No default model could be loaded: " + " / ".join(errors), icon=":material/error:")
    return None


def current_dataset(model: LoadedModel | None) -> Dataset | None:
    if model is None:
        return None
    try:
        return load_dataset_choice(st.session_state.get("dataset_choice") or {"kind": "auto"}, model)
    except Exception as exc:
        st.error(friendly_message(exc, "Loading the dataset") + " Falling back to synthetic inputs.", icon=":material/error:")
        return None


def navigation_pages() -> list[Any]:
    """The app's pages, in menu order (paths are relative to app.py)."""
    return [
        st.Page("pages/0_Home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/1_Model.py", title="Model", icon=":material/deployed_code:"),
        st.Page("pages/2_Compress.py", title="Compress", icon=":material/compress:"),
        st.Page("pages/3_Compare.py", title="Compare", icon=":material/monitoring:"),
        st.Page("pages/4_Layers.py", title="Layers", icon=":material/stacked_bar_chart:"),
    ]


_RUN = threading.local()  # what app.py loaded in this script run (each run executes in one thread)


def set_app_context(context: tuple[LoadedModel | None, Dataset | None] | None) -> None:
    _RUN.context = context


def page_context() -> tuple[LoadedModel | None, Dataset | None]:
    """The model and dataset that app.py loaded for this run.

    Streamlit still runs a file from pages/ directly (without app.py) in its legacy multipage mode: on a
    server's very first request when that is a deep link, and in AppTest. Then this does app.py's work.
    Call it once per page run, at the top.
    """
    context = getattr(_RUN, "context", None)
    if context is None:
        configure_page()
        _leave_legacy_multipage_mode()
        init_session()
        model = current_model()
        dataset = current_dataset(model)
        sidebar(model, dataset)
        context = (model, dataset)
    return context


def _leave_legacy_multipage_mode() -> None:
    """Make the next run go through app.py, as st.navigation would (calling it here would re-route this run).

    Streamlit keeps this flag on its PagesManager class (no public setter); if that ever moves, the app still
    works, it only shows Streamlit's file-based menu until someone opens the home page.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager

        PagesManager.uses_pages_directory = False
    except (ImportError, AttributeError):
        pass


def configure_page() -> None:
    from core.progress import quiet_libraries

    quiet_libraries()
    st.set_page_config(page_title="Compression Studio", page_icon=":material/compress:", layout="wide")


def dataset_key(dataset: Dataset | None) -> str:
    return "none" if dataset is None else f"{dataset.name}|{dataset.source}|{len(dataset.test)}"


@st.cache_resource(show_spinner=False, max_entries=32)
def _baseline(_model: LoadedModel, _dataset: Dataset | None, model_key: str, data_key: str, limit: int | None) -> dict:
    from core.experiment import baseline_record

    return baseline_record(model=_model, dataset=_dataset, eval_limit=limit)


def baseline_for(model: LoadedModel, dataset: Dataset | None) -> dict:
    """The cached baseline record; also remembers the per-image forward time for run-time estimates."""
    choice = st.session_state.get("model_choice") or {}
    key = f"{model.source_id}|{choice.get('hash')}"
    record = _baseline(model, dataset, key, dataset_key(dataset), eval_limit())
    batches = ((record.get("latency") or {}).get("batches") or {})
    if batches:
        largest = max(batches, key=int)
        p50 = ((batches[largest] or {}).get("baseline") or {}).get("p50_ms")
        if isinstance(p50, int | float):
            st.session_state.setdefault("forward_ms_per_image", {})[model.source_id] = p50 / int(largest)
    return record


def forward_ms_per_image(model: LoadedModel) -> float | None:
    return (st.session_state.get("forward_ms_per_image") or {}).get(model.source_id)


# --------------------------------------------------------------------------- experiments


@st.cache_data(show_spinner=False, max_entries=16)
def _records(home: str, version: tuple[int, int], model: str | None) -> list[dict]:
    del version  # cache key: a new or deleted experiment invalidates
    return _store(home).list(model=model)


def records(*, model: str | None = None) -> list[dict]:
    """Experiment records from the store, cached until an experiment is added or deleted."""
    s = store()
    return _records(str(s.home), s.version(), model)


def experiment_count() -> int:
    try:
        return store().count()
    except Exception:  # the sidebar must render even if the store is broken
        return 0


# --------------------------------------------------------------------------- uploads


def save_upload(uploaded: Any) -> tuple[Path, str]:
    """Write an uploaded file into this session's private folder; returns (path, content hash)."""
    data = uploaded.getvalue()
    digest = hashlib.sha256(data).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(uploaded.name).name)[-120:] or "upload"
    folder = store().uploads_dir(st.session_state["session_id"])
    path = folder / f"{digest}_{name}"
    if not path.exists():
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path, digest


# --------------------------------------------------------------------------- formatting


def fmt_bytes(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(number):
        return "n/a"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(number) >= scale:
            return f"{number / scale:.2f} {unit}"
    return f"{number:.0f} B"


def fmt_pct(value: Any, digits: int = 2) -> str:
    try:
        number = float(value) * 100
    except (TypeError, ValueError):
        return "n/a"
    return f"{number:.{digits}f} %" if math.isfinite(number) else "n/a"


def fmt_num(value: Any, spec: str = ".2f", suffix: str = "") -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return f"{number:{spec}}{suffix}" if math.isfinite(number) else "n/a"


def fmt_seconds(value: Any) -> str:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return "n/a"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


# --------------------------------------------------------------------------- sidebar


def sidebar(model: LoadedModel | None, dataset: Dataset | None) -> None:
    with st.sidebar:
        st.markdown("**Current model**")
        if model is None:
            st.caption("none loaded — open the Model page")
        else:
            st.markdown(f":material/deployed_code: {model.label}")
            st.caption(f"{model.params / 1e6:.2f} M parameters · {model.weights_note}")
        st.markdown("**Dataset**")
        if dataset is None:
            st.caption("synthetic inputs — accuracy is not measured")
        else:
            st.markdown(f":material/photo_library: {dataset.name}")
            st.caption(f"{len(dataset.test):,} evaluation images · source: {dataset.source}")
        count = experiment_count()
        st.markdown(f"**Experiments:** {count}")
        job = st.session_state.get("run_job")
        if isinstance(job, RunJob) and job.running:
            st.info(f"Running: {job.summary} ({int(job.fraction * 100)} %)", icon=":material/hourglass_top:")


# --------------------------------------------------------------------------- the run job


@dataclass
class RunJob:
    """One compression run in a background thread; the page polls it, so reruns never interrupt the work."""

    summary: str
    model_label: str
    progress: Progress = field(default_factory=Progress)
    fraction: float = 0.0
    message: str = "starting…"
    steps: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    experiment_id: int | None = None
    record: dict | None = None
    error: str | None = None
    cancelled: bool = False
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.finished is None

    @property
    def elapsed(self) -> float:
        return (self.finished or time.time()) - self.started

    def on_progress(self, fraction: float, message: str) -> None:
        self.fraction = max(self.fraction, min(max(float(fraction), 0.0), 1.0))
        if message:
            self.message = message
            step = message.split("(")[0].strip()
            if not self.steps or self.steps[-1] != step:
                self.steps.append(step)

    def cancel(self) -> None:
        self.progress.cancel()
        self.message = "cancelling… (stops at the next step boundary)"


def start_run(*, model: LoadedModel, dataset: Dataset | None, spec: AnySpec, limit: int | None) -> RunJob:
    """Start compress → export → measure → save in a thread. Nothing is saved unless every step succeeds."""
    from core.experiment import ExperimentOptions, run_experiment

    experiment_store = store()
    job = RunJob(summary=spec.summary(), model_label=model.label)
    job.progress = Progress(job.on_progress)

    def work() -> None:
        try:
            with experiment_store.staging() as staging:
                record = run_experiment(
                    model=model,
                    spec=spec,
                    dataset=dataset,
                    artifacts_dir=staging,
                    progress=job.progress,
                    options=ExperimentOptions(eval_limit=limit),
                )
                job.progress.update(1.0, "saving the experiment")  # a last chance to cancel before saving
                job.experiment_id = experiment_store.add(record, staging_dir=staging)
            job.record = experiment_store.get(job.experiment_id)
        except Cancelled:
            job.cancelled = True
        except Exception as exc:  # shown as a message on the page; the traceback goes to the log
            LOG.warning("compression run failed:\n%s", traceback.format_exc())
            job.error = friendly_message(exc, "The compression run")
        finally:
            job.finished = time.time()

    job.thread = threading.Thread(target=work, name=f"compress-{job.started:.0f}", daemon=True)
    job.thread.start()
    return job


def wait_for(job: RunJob, *, on_tick: Callable[[RunJob], None], interval: float = 0.25) -> None:
    """Poll a running job, calling on_tick to redraw; a widget click reruns the page, which re-attaches."""
    while job.running:
        on_tick(job)
        time.sleep(interval)
    on_tick(job)


# --------------------------------------------------------------------------- time estimate


def estimate_seconds(*, model: LoadedModel, spec: AnySpec, eval_images: int, history: list[dict],
                     forward_ms_per_image: float | None) -> tuple[float, str]:
    """A rough wall-time estimate of a run and what it is based on (earlier runs where there are some)."""
    method = getattr(spec, "method", "pipeline")
    workflow = getattr(spec, "workflow", "data_free")
    same = [
        r["compress_seconds"] for r in history
        if r.get("method") == method and r.get("workflow") == workflow and isinstance(r.get("compress_seconds"), int | float)
    ]
    per_image = (forward_ms_per_image or max(0.05, model.params / 1e6 * 0.4)) / 1000
    if same:
        compress = statistics.median(same)
        basis = f"compression time is the median of {len(same)} earlier {method} / {workflow} run(s) of this model"
    else:
        steps = spec.steps if hasattr(spec, "steps") else (spec,)
        compress = 0.0
        for step in steps:
            compress += 1.0 + model.params / 1e6 * (4.0 if step.method == "palettize" else 1.0)
            if step.workflow == "calibration":
                compress += step.calibration_samples * per_image * 4
            if step.workflow == "fine_tune":
                images = step.max_steps * step.batch_size if step.max_steps else step.epochs * step.train_limit
                compress += images * per_image * 3
        basis = "no earlier run of this kind: a rough guess from the model size"
    export = 4.0 + model.params / 1e6 * 3.0
    evaluate = eval_images * per_image * 2 + 8.0  # both models + the latency harness
    return compress + export + evaluate, basis


# --------------------------------------------------------------------------- result card and downloads


def _recipe_texts(record: dict) -> tuple[str, str] | None:
    """(coremltools config YAML, Python snippet) for a record's spec; None if the recipe exporter is unavailable."""
    from core.specs import spec_from_dict

    try:
        from core import recipe
    except ImportError:
        return None
    spec = spec_from_dict(record.get("spec") or {})
    return recipe.recipe_yaml(spec), recipe.python_snippet(spec=spec, source_id=str(record.get("model")))


def downloads(record: dict, *, key: str) -> None:
    """Download buttons for one experiment: the compressed model, the recipe as YAML and as Python."""
    experiment_id = int(record["id"])
    cols = st.columns(3)
    try:
        _, name, mime = store().artifact_file(experiment_id)
    except ValueError as exc:
        cols[0].caption(f":material/block: {exc}")
    else:
        label = "Core ML package (.zip)" if record.get("artifact_kind") == "mlpackage" else "TorchScript model"
        cols[0].download_button(f"{label} · {fmt_bytes(record.get('size_bytes'))}",
                                lambda: store().artifact_download(experiment_id)[0],  # zipped only when clicked
                                file_name=name, mime=mime, on_click="ignore",
                                icon=":material/download:", key=f"{key}.artifact", width="stretch")
    texts = attempt("Building the recipe", _recipe_texts, record)
    if texts is not None:
        yaml_text, snippet = texts
        cols[1].download_button("Recipe (coremltools YAML)", yaml_text, file_name=f"experiment{experiment_id}_recipe.yaml",
                                mime="text/yaml", icon=":material/description:", key=f"{key}.yaml", width="stretch",
                                on_click="ignore")
        cols[2].download_button("Recipe (Python snippet)", snippet, file_name=f"experiment{experiment_id}_recipe.py",
                                mime="text/x-python", icon=":material/code:", key=f"{key}.py", width="stretch",
                                on_click="ignore")


def result_card(record: dict) -> None:
    """The outcome of one run: accuracy Δ, agreement, real size ratio, latency ratio (with its note), time."""
    experiment_id = record.get("id")
    st.success(f"Saved as experiment **#{experiment_id}** — {record.get('spec_summary')}", icon=":material/check_circle:")
    acc, base = record.get("accuracy_top1"), record.get("baseline_accuracy_top1")
    meaningful = bool(record.get("accuracy_meaningful")) and isinstance(acc, int | float) and isinstance(base, int | float)
    cols = st.columns(5)
    if meaningful:
        cols[0].metric("Top-1 accuracy", fmt_pct(acc), delta=f"{(acc - base) * 100:+.2f} pts vs {fmt_pct(base)}",
                       border=True, help=f"on {record.get('eval_images', '?'):,} held-out images ({record.get('dataset_source')})")
    else:
        cols[0].metric("Top-1 accuracy", "n/a", border=True, help="Not meaningful for this model (random weights or no dataset).")
    cols[1].metric("Agreement", fmt_pct(record.get("agreement_top1")), border=True,
                   delta=f"{record.get('flipped', 0):,} changed", delta_color="off", delta_arrow="off",
                   help="Share of images where the compressed model predicts the same class as the original; "
                   "'changed' counts the images whose prediction flipped.")
    ratio = record.get("compression_ratio_fp16")
    cols[2].metric("Size on disk", fmt_bytes(record.get("size_bytes")), border=True,
                   delta=f"{ratio:.2f}× smaller" if isinstance(ratio, int | float) else None, delta_color="normal",
                   help=f"The exported {record.get('artifact_kind') or 'artifact'} measured on disk, vs the uncompressed fp16 "
                   f".mlpackage ({fmt_bytes(record.get('size_fp16_bytes'))}).")
    lat = record.get("latency_ratio")
    cols[3].metric("Latency p50", fmt_num(record.get("latency_ms_p50"), ".3f", " ms"), border=True,
                   # A signed percentage, so a faster model shows a green downward arrow.
                   delta=f"{(lat - 1) * 100:+.0f} % vs baseline" if isinstance(lat, int | float) else None,
                   # Weight-only results run decompressed on the CPU: any difference is noise, so no red/green.
                   delta_color="inverse" if record.get("runs_int8_kernels") else "off",
                   help="Batch 1 on this CPU, timed interleaved with the baseline in the same process"
                   + (f": {lat:.2f}× the baseline's median." if isinstance(lat, int | float) else "."))
    cols[4].metric("Time to compress", fmt_seconds(record.get("compress_seconds")), border=True,
                   delta=f"{record.get('workflow', '')}".replace("_", "-"), delta_color="off", delta_arrow="off",
                   help="Wall time of the compression step alone (export and measurement not included).")
    if record.get("latency_note"):
        st.caption(f":material/speed: {record['latency_note']}")
    check = record.get("size_check") or {}
    if check.get("note"):
        st.caption(f":material/straighten: {check['note']}")
    layers = record.get("layers") or []
    skipped = [layer for layer in layers if not layer.get("compressed")]
    if layers:
        st.caption(f":material/layers: {len(layers) - len(skipped)} of {len(layers)} weight layers compressed"
                   + (f"; left as they were: {', '.join(layer['name'] for layer in skipped[:6])}"
                      + (" …" if len(skipped) > 6 else "") + " (reasons on the Layers page)" if skipped else "."))
    if record.get("notes"):
        with st.expander(f"Notes from this run ({len(record['notes'])})"):
            for note in record["notes"]:
                st.markdown(f"- {note}")
    downloads(record, key=f"result.{experiment_id}")
    c1, c2, _ = st.columns([1, 1, 2])
    if c1.button("See it in Compare", icon=":material/monitoring:", key=f"result.{experiment_id}.compare", width="stretch"):
        st.session_state["selected_experiment"] = experiment_id
        st.switch_page("pages/3_Compare.py")
    if c2.button("Open layer histograms", icon=":material/stacked_bar_chart:", key=f"result.{experiment_id}.layers", width="stretch"):
        st.session_state["selected_experiment"] = experiment_id
        st.switch_page("pages/4_Layers.py")


# --------------------------------------------------------------------------- images of flipped predictions


@st.cache_resource(show_spinner=False, max_entries=4)
def _fashion(kind: str) -> Dataset:
    return load_bundled_subset() if kind == "bundled" else load_fashion_mnist()


def dataset_for_record(record: dict, *, current: Dataset | None) -> Dataset | None:
    """The dataset an experiment was evaluated on, if it can be found again (its source must match exactly)."""
    source = record.get("dataset_source")
    if current is not None and current.source == source:
        return current
    if record.get("dataset") != "Fashion-MNIST":
        return None
    for kind in ("bundled", "fashion"):
        try:
            candidate = _fashion(kind)
        except Exception:  # the dataset is simply not available here
            continue
        if candidate.source == source:
            return candidate
    return None


def thumbnail(dataset: Dataset, index: int, *, size: int = 112) -> Any:
    """One evaluation image, enlarged with nearest-neighbour so its pixels stay crisp."""
    from PIL import Image

    array = dataset.test.images[int(index)].numpy()
    image = Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))
    return image.resize((size, size), Image.Resampling.NEAREST)
