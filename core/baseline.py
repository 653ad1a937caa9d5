"""The uncompressed model's measurements, computed once: its logits, its fp16 .mlpackage size, its record.

Three caches, keyed by the model's weights (``model_fingerprint``) and the evaluation set, so a series of
experiments evaluates and exports the uncompressed model once: baseline logits (in process and on disk),
fp16 baseline packages (on disk, size remembered in process) and whole baseline records (in process).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import threading
import weakref
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.data import Dataset
from core.disk import enforce_cap_of_folder, touch
from core.evaluation import EvalData, evaluate, input_factory, resolve_eval_data
from core.experiment_options import ExperimentOptions
from core.measure.latency import measure_interleaved
from core.measure.memory import peak_inference_memory_bytes
from core.measure.quality import Evaluation
from core.measure.size import path_size_bytes
from core.models.sources import LoadedModel
from core.progress import Progress, as_progress, library_notes_into, library_version_warnings
from core.records import (
    BASELINE,
    accuracy_fields,
    build_record,
    data_fields,
    latency_fields,
    machine_fields,
    model_fields,
)

_fingerprints: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()
_baseline_evals: dict[str, Evaluation] = {}
_baseline_records: dict[str, dict] = {}
_fp16_packages: dict[str, tuple[int, str]] = {}
_baseline_peaks: dict[str, int | None] = {}
_cache_lock = threading.Lock()


def model_fingerprint(model: LoadedModel) -> str:
    """source id + a hash of every tensor in the state_dict: retrained weights never hit a stale cache."""
    module = model.module
    with _cache_lock:
        cached = _fingerprints.get(module)
    if cached is not None:
        return cached
    digest = hashlib.sha1(model.source_id.encode())
    for name, value in module.state_dict().items():
        digest.update(name.encode())
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu()
            if tensor.is_quantized:
                tensor = tensor.int_repr()
            digest.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
            digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    fingerprint = digest.hexdigest()[:20]
    with contextlib.suppress(TypeError), _cache_lock:  # some scripted modules cannot be weakly referenced
        _fingerprints[module] = fingerprint
    return fingerprint


def _cache_key(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:24]


def clear_caches() -> None:
    """Forget in-process baseline caches (tests; after the sample weights were retrained)."""
    with _cache_lock:
        _baseline_evals.clear()
        _baseline_records.clear()
        _fp16_packages.clear()
        _baseline_peaks.clear()
        _fingerprints.clear()


def measured_in_this_process() -> bool:
    """Whether this process holds a baseline it evaluated itself (the app hands that work to a worker)."""
    with _cache_lock:
        return bool(_baseline_evals or _baseline_records)


# --------------------------------------------------------------------------- baseline logits


def baseline_evaluation(
    *, model: LoadedModel, data: EvalData, options: ExperimentOptions, progress: Progress | None = None
) -> Evaluation:
    """Logits of the uncompressed model on `data`: in-process cache, then on-disk cache, then computed once."""
    progress = as_progress(progress)
    key = _cache_key(model_fingerprint(model), data.key)
    with _cache_lock:
        hit = _baseline_evals.get(key)
    if hit is not None:
        progress.update(1.0, "Baseline evaluation (cached)")
        return hit
    path = options.cache_root() / "baseline_eval" / f"{key}.npz"
    evaluation = _read_eval_cache(path, expected=data.size)
    if evaluation is None:
        evaluation = evaluate(
            module=model.module, data=data, options=options, progress=progress, label="Evaluating baseline"
        )
        _write_eval_cache(path, evaluation)
        enforce_cap_of_folder(path.parent, part="baseline_eval", keep=[path])  # least recently used go first
    else:
        touch(path)  # recently used: the size cap removes other entries first
        progress.update(1.0, "Baseline evaluation (cached on disk)")
    with _cache_lock:
        _baseline_evals[key] = evaluation
    return evaluation


def _read_eval_cache(path: Path, *, expected: int) -> Evaluation | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            logits = torch.from_numpy(npz["logits"].copy())
            labels = torch.from_numpy(npz["labels"].copy()) if "labels" in npz.files else None
            seconds = float(npz["seconds"]) if "seconds" in npz.files else 0.0
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache file is simply recomputed
    if len(logits) != expected:
        return None
    return Evaluation(logits=logits, labels=labels, seconds=seconds)


def _write_eval_cache(path: Path, evaluation: Evaluation) -> None:
    arrays = {"logits": evaluation.logits.numpy(), "seconds": np.asarray(evaluation.seconds)}
    if evaluation.labels is not None:
        arrays["labels"] = evaluation.labels.numpy()
    with contextlib.suppress(OSError):  # a read-only cache folder only costs a re-evaluation next time
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)


# --------------------------------------------------------------------------- fp16 baseline package


def fp16_baseline_size(
    *, model: LoadedModel, options: ExperimentOptions, progress: Progress | None = None, notes: list[str]
) -> tuple[int, str]:
    """Bytes of the uncompressed fp16 .mlpackage (exported once per model weights and cached), and where it came from."""
    progress = as_progress(progress)
    fingerprint = model_fingerprint(model)
    with _cache_lock:
        hit = _fp16_packages.get(fingerprint)
    if hit is not None:
        return hit
    fallback = (model.size_fp16_bytes, "fp16 tensor bytes (2 bytes × float element); no .mlpackage was exported")
    if not options.export:
        return fallback
    try:
        from core.export import export_coreml_baseline
    except ImportError:
        notes.append("The Core ML exporter is not available: the fp16 baseline size is the fp16 tensor bytes.")
        return fallback
    package = options.cache_root() / "baseline_mlpackage" / f"{fingerprint}.mlpackage"
    if not package.exists():
        package.parent.mkdir(parents=True, exist_ok=True)
        staging = package.with_name(f".{package.stem}.{os.getpid()}.{threading.get_ident()}.mlpackage")
        try:
            with library_notes_into(notes):
                export_coreml_baseline(model=model, path=staging, progress=progress)
            if not package.exists():
                os.replace(staging, package)
            enforce_cap_of_folder(package.parent, part="baseline_mlpackage", keep=[package])
        except Exception as exc:  # a secondary measurement: whatever Core ML refuses, say so and keep going
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            notes.append(f"fp16 baseline .mlpackage could not be exported ({first}); using fp16 tensor bytes instead.")
            return fallback
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    touch(package)
    result = (path_size_bytes(package), f"fp16 .mlpackage on disk ({package.name}, uncompressed Core ML baseline)")
    progress.update(1.0, "fp16 baseline package ready")
    with _cache_lock:
        _fp16_packages[fingerprint] = result
    return result


# --------------------------------------------------------------------------- baseline peak memory


def baseline_peak_memory(*, model: LoadedModel, options: ExperimentOptions, notes: list[str]) -> int | None:
    """Peak CPU bytes of one batch-1 inference of the uncompressed model, measured once per (weights, input shape,
    seed, torch threads) in this process: a series of experiments on one model profiles the baseline once."""
    key = _cache_key(model_fingerprint(model), model.input_shape, options.seed, torch.get_num_threads())
    with _cache_lock:
        if key in _baseline_peaks:
            return _baseline_peaks[key]
    make_input = input_factory(model.input_shape, options.seed)
    with library_notes_into(notes):
        peak = peak_inference_memory_bytes(run=model.module, inputs=make_input(1), notes=notes)
    with _cache_lock:
        _baseline_peaks[key] = peak
    return peak


# --------------------------------------------------------------------------- baseline record


def baseline_record(
    *,
    model: LoadedModel,
    dataset: Dataset | None,
    progress: Progress | None = None,
    eval_limit: int | None = None,
    options: ExperimentOptions | None = None,
) -> dict:
    """Measurements of the uncompressed model: accuracy, sizes (fp32 tensors, fp16 .mlpackage), latency, memory.

    Cached per (model weights, evaluation set, eval size) for the life of the process.
    """
    progress = as_progress(progress)
    options = options or ExperimentOptions()
    if eval_limit is not None:
        options = dataclasses.replace(options, eval_limit=eval_limit)
    data = resolve_eval_data(model=model, dataset=dataset, options=options)
    key = _cache_key(model_fingerprint(model), data.key, options.export, options.measure_latency, options.latency)
    with _cache_lock:
        hit = _baseline_records.get(key)
    if hit is not None:
        progress.update(1.0, "Baseline (cached)")
        return json.loads(json.dumps(hit))
    record = _measure_baseline(model=model, data=data, options=options, progress=progress)
    with _cache_lock:
        _baseline_records[key] = record
    progress.update(1.0, "Baseline measured")
    return json.loads(json.dumps(record))


def _measure_baseline(*, model: LoadedModel, data: EvalData, options: ExperimentOptions, progress: Progress) -> dict:
    notes = list(data.notes) + library_version_warnings()  # the Model page says it once; the record keeps it
    evaluation = baseline_evaluation(model=model, data=data, options=options, progress=progress.sub(0.0, 0.5))
    size_fp16, size_fp16_source = fp16_baseline_size(
        model=model, options=options, progress=progress.sub(0.5, 0.75), notes=notes
    )
    settings = options.latency_settings(model.input_shape)
    make_input = input_factory(model.input_shape, options.seed)
    latency: dict | None = None
    if options.measure_latency:
        with options.timing_guard() if options.timing_guard else contextlib.nullcontext():
            latency = measure_interleaved(
                runners={"baseline": model.module},
                make_input=make_input,
                settings=settings,
                progress=progress.sub(0.75, 0.97),
            )
    peak = None
    if options.measure_memory:
        peak = baseline_peak_memory(model=model, options=options, notes=notes)
    return build_record(
        BASELINE,
        **model_fields(model),
        **data_fields(data),
        eval_seconds=evaluation.seconds,
        **accuracy_fields(evaluation, data=data, num_classes=model.num_classes),
        accuracy_note=None
        if data.accuracy_meaningful
        else f"accuracy is not meaningful for {model.label}: {model.weights_note}",
        size_fp32_bytes=model.size_fp32_bytes,
        size_fp16_bytes=size_fp16,
        size_fp16_source=size_fp16_source,
        **latency_fields(latency, settings=settings, runner="baseline"),
        latency=latency,
        peak_memory_bytes=peak,
        **machine_fields(settings),
        notes=notes,
    )
