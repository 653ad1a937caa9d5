"""Models, datasets and baselines, loaded through core and cached per server (st.cache_resource)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import streamlit as st

from core.data import Dataset
from core.dataset_choice import dataset_for_model, is_record_dataset, load_dataset_kind, record_dataset_kinds
from core.estimate import forward_ms_per_image as baseline_ms_per_image
from core.models.preprocessing import Preprocessing
from core.models.sources import LoadedModel, load_model
from core.models.torchscript_probe import torchscript_uploads_allowed
from pages._ui.errors import attempt, friendly_message
from pages._ui.session import eval_limit


def default_models() -> tuple[str, ...]:
    """The models a fresh session tries in order; read at call time, so a setting made after import still counts."""
    chosen = os.environ.get("COMPRESSION_STUDIO_DEFAULT_MODEL")
    return tuple(m for m in (chosen, "sample:fashion_resnet", "sample:fashion_cnn") if m)


def server_address() -> str:
    """Where this dashboard listens; Streamlit's unset address means every interface."""
    return st.get_option("server.address") or "0.0.0.0"


def torchscript_allowed() -> bool:
    """May this dashboard load TorchScript uploads (core.models.torchscript_probe decides)?"""
    return torchscript_uploads_allowed(server_address())


@st.cache_resource(show_spinner="Loading the model…", max_entries=12)
def _model(source_id: str, weights: str | None, content_hash: str | None, pretrained: bool, address: str,
           ts_allowed: bool) -> LoadedModel:
    # content_hash and ts_allowed are part of the cache key only: new content is a new model, and a TorchScript
    # model loaded while uploads were allowed is not handed out after they were turned off.
    del content_hash, ts_allowed
    return load_model(source_id, weights=Path(weights) if weights else None, pretrained=pretrained,
                      server_address=address)


def load_choice(choice: dict) -> LoadedModel:
    return _model(choice["source_id"], choice.get("weights"), choice.get("hash"), bool(choice.get("pretrained")),
                  server_address(), torchscript_allowed())


@st.cache_resource(show_spinner="Loading the dataset…", max_entries=8)
def _dataset(kind: str, path: str | None, content_hash: str | None, size: tuple[int, int] | None, channels: int | None,
             mean: tuple[float, ...] | None, std: tuple[float, ...] | None, classes: int | None,
             preprocessing: Preprocessing | None) -> Dataset:
    del content_hash
    return load_dataset_kind(kind=kind, path=Path(path) if path else None, image_size=size, channels=channels,
                             mean=mean, std=std, expected_classes=classes, preprocessing=preprocessing)


def load_dataset_choice(choice: dict, model: LoadedModel) -> Dataset | None:
    """The dataset the session chose for this model (None: synthetic inputs); raises DatasetError if it does not fit."""
    kind = choice.get("kind", "auto")
    return dataset_for_model(kind=kind, model=model, load=lambda: _dataset(
        kind,
        choice.get("path"),
        choice.get("hash"),
        tuple(choice["size"]) if choice.get("size") else None,
        choice.get("channels"),
        tuple(choice["mean"]) if choice.get("mean") else None,
        tuple(choice["std"]) if choice.get("std") else None,
        model.num_classes if kind == "folder" else None,
        model.preprocessing if kind == "folder" else None,
    ))


def current_model() -> LoadedModel | None:
    """The session's model; the first visit loads the default sample. Shows an error and returns None on failure."""
    choice = st.session_state.get("model_choice")
    if choice is not None:
        return attempt("Loading the model", load_choice, choice)
    errors = []
    for source_id in default_models():
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


def baseline_for(model: LoadedModel, dataset: Dataset | None) -> dict | None:
    """The baseline record a worker measured earlier for this model, data and options (core.jobs.baselines), or None
    when a baseline job still has to measure it: this process never evaluates, exports or times. Also remembers
    the per-image forward time for run-time estimates."""
    from core.jobs.baselines import cached_baseline, resolve_options
    from pages._ui.run_client import measure_options

    options = resolve_options(options=measure_options(limit=eval_limit()), input_shape=model.input_shape,
                              cache_dir=None)
    record = cached_baseline(model=model, dataset=dataset, options=options)
    if record is not None:
        remember_forward_time(model, record)
    return record


def remember_forward_time(model: LoadedModel, record: dict) -> None:
    per_image = baseline_ms_per_image(record)
    if per_image is not None:
        st.session_state.setdefault("forward_ms_per_image", {})[model.source_id] = per_image


def forward_ms_per_image(model: LoadedModel) -> float | None:
    """The per-image forward time measured by this session's baseline of `model`, if it was measured."""
    return (st.session_state.get("forward_ms_per_image") or {}).get(model.source_id)


@st.cache_resource(show_spinner=False, max_entries=4)
def _record_candidate(kind: str) -> Dataset:
    return load_dataset_kind(kind=kind)


def dataset_for_record(record: dict, *, current: Dataset | None) -> Dataset | None:
    """The dataset an experiment was evaluated on, if it can be found again on this machine."""
    if is_record_dataset(current, record):
        return current
    for kind in record_dataset_kinds(record):
        try:
            candidate = _record_candidate(kind)
        except Exception:  # the dataset is simply not available here
            continue
        if is_record_dataset(candidate, record):
            return candidate
    return None


def thumbnail(dataset: Dataset, index: int, *, size: int = 112) -> Any:
    """One evaluation image, enlarged with nearest-neighbour so its pixels stay crisp."""
    from PIL import Image

    array = dataset.test.images[int(index)].numpy()
    image = Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))
    return image.resize((size, size), Image.Resampling.NEAREST)
