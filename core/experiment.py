"""One experiment end to end: compress a copy → export the artifact → measure it against the baseline → a record.

The record is a plain JSON-serialisable dict (see ARCHITECTURE.md / the measurement contract): the store saves
it, the pages chart it, the CLI writes it. Baseline measurements are cached per (model weights, evaluation set),
in this process and on disk, so a series of experiments evaluates the uncompressed model once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.compress.result import CompressionResult
from core.data import Dataset, DatasetError, Split, load_fashion_mnist, synthetic_inputs
from core.measure.latency import LatencySettings, coreml_latency, latency_ratio, measure_interleaved, quantized_engine
from core.measure.machine import describe_machine
from core.measure.memory import peak_inference_memory_bytes
from core.measure.quality import Evaluation, accuracy_summary, agreement_summary, collect_logits, finite_or_none
from core.measure.size import (
    COREML_FORMAT,
    SizeEstimate,
    float_param_count,
    module_payload_size,
    path_size_bytes,
    size_check,
    theoretical_size,
)
from core.measure.weights import write_weights_npz
from core.models.sources import FASHION_MNIST, LoadedModel
from core.progress import Progress, as_progress, captured_library_output
from core.specs import AnySpec, PipelineSpec

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HOME_ENV = "COMPRESSION_STUDIO_HOME"
WEIGHT_ONLY_METHODS = ("palettize", "quantize_weights", "prune", "pipeline")


def default_cache_dir() -> Path:
    """On-disk caches live in the data folder (``$COMPRESSION_STUDIO_HOME`` or ``studio_data/``)."""
    env = os.environ.get(HOME_ENV)
    return (Path(env).expanduser() if env else PROJECT_ROOT / "studio_data") / "cache"


def default_latency_settings(input_shape: tuple[int, ...]) -> LatencySettings:
    """Batch 1 and a larger batch; 224×224 models get a smaller large batch and more time per batch size."""
    threads = max(1, min(2, os.cpu_count() or 1))
    pixels = int(np.prod(input_shape[1:])) if len(input_shape) >= 2 else 1
    if pixels > 64 * 64:
        return LatencySettings(threads=threads, batch_sizes=(1, 8), seconds_per_batch_size=4.0, min_repeats=5)
    return LatencySettings(threads=threads, batch_sizes=(1, 32), seconds_per_batch_size=2.0)


@dataclass(frozen=True)
class ExperimentOptions:
    """Knobs of the measurement (the compression itself is fully described by the spec)."""

    eval_limit: int | None = None  # evaluate the first N test images (None: all)
    eval_batch_size: int = 256
    synthetic_eval_images: int = 64  # models without a dataset are compared on this many random inputs
    latency: LatencySettings | None = None  # None: default_latency_settings(model input shape)
    measure_latency: bool = True
    measure_memory: bool = True
    export: bool = True  # write the real artifact (.mlpackage / TorchScript) and the fp16 baseline package
    # int8 results: time the exported, frozen TorchScript file instead of the converted module. Off by default so the
    # A/B compares like with like (both Python-dispatched modules); the benchmark shows the frozen forms side by side.
    time_artifact: bool = False
    flipped_limit: int = 1000  # at most this many flipped images are listed (the count is always exact)
    weights_sample: int = 50_000  # weight values per layer kept for histograms
    cache_dir: Path | None = None  # None: default_cache_dir(); baseline logits and fp16 packages are cached there
    seed: int = 0

    def __post_init__(self) -> None:
        if self.eval_limit is not None and (isinstance(self.eval_limit, bool) or self.eval_limit < 1):
            raise ValueError(f"eval_limit must be a positive number of images; got {self.eval_limit!r}.")
        if self.eval_batch_size < 1 or self.synthetic_eval_images < 1:
            raise ValueError("eval_batch_size and synthetic_eval_images must be positive.")

    def latency_settings(self, input_shape: tuple[int, ...]) -> LatencySettings:
        return self.latency or default_latency_settings(input_shape)

    def cache_root(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir()


# --------------------------------------------------------------------------- evaluation data


@dataclass
class EvalData:
    """What a model is evaluated on: a labelled split, or synthetic inputs when it has no dataset."""

    key: str
    source: str
    name: str
    dataset: Dataset | None
    split: Split | None
    batches: list[torch.Tensor] | None
    accuracy_meaningful: bool
    class_names: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        if self.split is not None:
            return len(self.split)
        return sum(len(b) for b in self.batches or [])


def resolve_eval_data(*, model: LoadedModel, dataset: Dataset | None, options: ExperimentOptions) -> EvalData:
    """The model's own dataset (loaded if not given), a compatible user dataset, or seeded synthetic inputs."""
    explicit = dataset is not None
    if dataset is None and model.dataset == FASHION_MNIST:
        dataset = load_fashion_mnist()
    if dataset is not None:
        if tuple(dataset.input_shape) != tuple(model.input_shape):
            raise DatasetError(
                f"{dataset.name} images are {'×'.join(map(str, dataset.input_shape))} but {model.label} expects "
                f"{'×'.join(map(str, model.input_shape))}; choose a dataset with that image size and channel count."
            )
        if dataset.num_classes != model.num_classes:
            raise DatasetError(
                f"{dataset.name} has {dataset.num_classes} classes but {model.label} has {model.num_classes} outputs; "
                "choose a dataset with one class folder per model output."
            )
        split = dataset.eval_split(limit=options.eval_limit)
        meaningful = model.accuracy_meaningful or (explicit and not model.weights_note.startswith("random"))
        notes = list(dataset.notes)
        if not meaningful:
            notes.append(f"Accuracy is not meaningful for {model.label} ({model.weights_note}).")
        return EvalData(
            key=f"{dataset.name}|{dataset.source}|{len(dataset.test)}|{len(split)}",
            source=dataset.source,
            name=dataset.name,
            dataset=dataset,
            split=split,
            batches=None,
            accuracy_meaningful=meaningful,
            class_names=list(dataset.class_names),
            notes=notes,
        )
    count = min(options.eval_limit or options.synthetic_eval_images, options.synthetic_eval_images)
    inputs = synthetic_inputs(input_shape=model.input_shape, count=count, seed=options.seed)
    batch = min(options.eval_batch_size, 16 if int(np.prod(model.input_shape)) > 64 * 64 * 3 else 256)
    shape = "×".join(map(str, model.input_shape))
    return EvalData(
        key=f"synthetic|{shape}|{count}|{options.seed}",
        source=f"synthetic inputs ({count} standard-normal {shape} tensors, seed {options.seed})",
        name="synthetic",
        dataset=None,
        split=None,
        batches=[inputs[i : i + batch] for i in range(0, count, batch)],
        accuracy_meaningful=False,
        class_names=list(model.class_names or [str(i) for i in range(model.num_classes)]),
        notes=[
            f"{model.label} has no matching dataset ({model.weights_note}): accuracy is not reported; agreement and "
            "output SNR compare it with the uncompressed model on synthetic inputs."
        ],
    )


def _evaluate(*, module: nn.Module, data: EvalData, options: ExperimentOptions, progress: Progress, label: str) -> Evaluation:
    if data.split is not None:
        return collect_logits(
            module=module, dataset=data.dataset, split=data.split, batch_size=options.eval_batch_size, progress=progress, label=label
        )
    return collect_logits(module=module, batches=data.batches, progress=progress, label=label)


# --------------------------------------------------------------------------- caches

_fingerprints: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()
_baseline_evals: dict[str, Evaluation] = {}
_baseline_records: dict[str, dict] = {}
_fp16_packages: dict[str, tuple[int, str]] = {}
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


def baseline_evaluation(*, model: LoadedModel, data: EvalData, options: ExperimentOptions, progress: Progress | None = None) -> Evaluation:
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
        evaluation = _evaluate(module=model.module, data=data, options=options, progress=progress, label="Evaluating baseline")
        _write_eval_cache(path, evaluation)
    else:
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


def clear_caches() -> None:
    """Forget in-process baseline caches (tests; after the sample weights were retrained)."""
    with _cache_lock:
        _baseline_evals.clear()
        _baseline_records.clear()
        _fp16_packages.clear()
        _fingerprints.clear()


def fp16_baseline_size(*, model: LoadedModel, options: ExperimentOptions, progress: Progress | None = None, notes: list[str]) -> tuple[int, str]:
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
            with _library_output_into(notes):
                export_coreml_baseline(model=model, path=staging, progress=progress)
            if not package.exists():
                os.replace(staging, package)
        except Exception as exc:  # a secondary measurement: whatever Core ML refuses, say so and keep going
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            notes.append(f"fp16 baseline .mlpackage could not be exported ({first}); using fp16 tensor bytes instead.")
            return fallback
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    result = (path_size_bytes(package), f"fp16 .mlpackage on disk ({package.name}, uncompressed Core ML baseline)")
    progress.update(1.0, "fp16 baseline package ready")
    with _cache_lock:
        _fp16_packages[fingerprint] = result
    return result


# --------------------------------------------------------------------------- latency / memory helpers


def _input_factory(input_shape: tuple[int, ...], seed: int) -> Callable[[int], torch.Tensor]:
    return lambda batch: synthetic_inputs(input_shape=tuple(input_shape), count=batch, seed=seed)  # type: ignore[arg-type]


def _engine_for(spec: AnySpec | None) -> str | None:
    backend = getattr(spec, "backend", None)
    return {"x86": "x86", "fbgemm": "fbgemm", "qnnpack": "qnnpack", "onednn": "onednn"}.get(backend) if backend else None


def latency_note(*, spec: AnySpec, result: CompressionResult, timed_artifact: bool) -> str:
    """What the CPU latency of this method means (and what it does not)."""
    method = spec.method
    if method == "torch_static":
        where = "the exported TorchScript file" if timed_artifact else "the converted PyTorch module"
        return (
            f"torch_static runs on real int8 CPU kernels ({getattr(spec, 'backend', 'x86')} backend); timed {where} against the eager fp32 module: "
            "the ratio is a real speed-up on this CPU."
        )
    if method == "torch_dynamic":
        return (
            "torch_dynamic quantizes only Linear layers (weights ahead of time, activations on the fly, real int8 or fp16 "
            "kernels); convolutions stay fp32, so a conv-heavy model's CPU latency barely changes."
        )
    if method == "quantize_activations":
        return (
            "W8A8 is simulated with fake-quantization in PyTorch: float math plus quantize/dequantize ops around every "
            "layer, so on the CPU it is slower than fp32, not faster; int8×int8 compute happens only on Apple hardware "
            "(Neural Engine) running the .mlpackage."
        )
    kind = "pruned / palettized / weight-quantized"
    if result.runs_int8_kernels:
        return "runs on real int8 CPU kernels; the ratio is a real speed-up on this CPU."
    return (
        f"{kind} weights run decompressed in PyTorch on the CPU, so CPU latency matches the baseline by construction; "
        "their speed-up only shows on Apple hardware running the .mlpackage."
    )


@contextlib.contextmanager
def _cleanup_on_failure(directory: Path) -> Iterator[None]:
    """If the run fails or is cancelled, remove everything it added to `directory` (nothing half-written stays)."""
    existed = directory.exists()
    before = set(directory.iterdir()) if existed else set()
    try:
        yield
    except BaseException:
        if directory.exists():
            for entry in set(directory.iterdir()) - before:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        entry.unlink()
            if not existed:
                with contextlib.suppress(OSError):
                    directory.rmdir()
        raise


@contextlib.contextmanager
def _library_output_into(notes: list[str]) -> Iterator[None]:
    """captured_library_output, minus torch's API deprecation chatter (jit/ao "is deprecated"), which says nothing
    about this experiment."""
    captured: list[str] = []
    try:
        with captured_library_output(captured):
            yield
    finally:
        notes.extend(line for line in captured if "deprecated" not in line and line not in notes)


def _model_fields(model: LoadedModel) -> dict:
    """What every record says about the model it measured."""
    return {
        "model": model.source_id,
        "model_label": model.label,
        "architecture": model.architecture,
        "weights_note": model.weights_note,
        "params": model.params,
        "input_shape": list(model.input_shape),
    }


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


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
    notes = list(data.notes)
    evaluation = baseline_evaluation(model=model, data=data, options=options, progress=progress.sub(0.0, 0.5))
    accuracy = accuracy_summary(evaluation=evaluation, num_classes=model.num_classes) if data.accuracy_meaningful else {
        "accuracy_top1": None, "accuracy_top5": None, "per_class_accuracy": []
    }
    size_fp16, size_fp16_source = fp16_baseline_size(model=model, options=options, progress=progress.sub(0.5, 0.75), notes=notes)
    settings = options.latency_settings(model.input_shape)
    make_input = _input_factory(model.input_shape, options.seed)
    latency: dict | None = None
    if options.measure_latency:
        latency = measure_interleaved(
            runners={"baseline": model.module}, make_input=make_input, settings=settings, progress=progress.sub(0.75, 0.97)
        )
    peak = None
    if options.measure_memory:
        with _library_output_into(notes):
            peak = peak_inference_memory_bytes(run=model.module, inputs=make_input(1), notes=notes)
    first = latency["batches"][str(settings.batch_sizes[0])]["baseline"] if latency else None
    record = {
        "kind": "baseline",
        **_model_fields(model),
        "created_at": _now(),
        "dataset": data.name,
        "dataset_source": data.source,
        "eval_images": data.size,
        "eval_seconds": evaluation.seconds,
        "accuracy_meaningful": data.accuracy_meaningful,
        **accuracy,
        "accuracy_note": None if data.accuracy_meaningful else f"accuracy is not meaningful for {model.label}: {model.weights_note}",
        "class_names": data.class_names,
        "size_fp32_bytes": model.size_fp32_bytes,
        "size_fp16_bytes": size_fp16,
        "size_fp16_source": size_fp16_source,
        "latency_ms_p50": first["p50_ms"] if first else None,
        "latency_ms_p90": first["p90_ms"] if first else None,
        "latency": latency,
        "peak_memory_bytes": peak,
        "threads": settings.threads,
        "machine": describe_machine(threads=settings.threads),
        "notes": notes,
    }
    record = to_jsonable(record)
    with _cache_lock:
        _baseline_records[key] = record
    progress.update(1.0, "Baseline measured")
    return json.loads(json.dumps(record))


# --------------------------------------------------------------------------- one experiment


def run_experiment(
    *,
    model: LoadedModel,
    spec: AnySpec,
    dataset: Dataset | None,
    artifacts_dir: Path,
    progress: Progress | None = None,
    options: ExperimentOptions | None = None,
) -> dict:
    """Compress `model` with `spec`, export, measure against the baseline and return the record.

    Writes the artifact and ``weights.npz`` into `artifacts_dir`; if anything fails or the run is cancelled
    (`Cancelled` propagates), whatever this run wrote there is removed again.
    """
    from core.compress import compress  # the engine; imported here so measurement loads without it

    progress = as_progress(progress)
    options = options or ExperimentOptions()
    artifacts_dir = Path(artifacts_dir)
    notes: list[str] = []
    data = resolve_eval_data(model=model, dataset=dataset, options=options)
    notes += data.notes
    engine = _engine_for(spec)

    with _cleanup_on_failure(artifacts_dir):
        artifacts_dir.mkdir(parents=True, exist_ok=True)
        # Compress first: a spec the engine refuses fails at once, before minutes of baseline evaluation.
        result = compress(model=model, spec=spec, dataset=data.dataset, progress=progress.sub(0.0, 0.5))
        notes += [n for n in result.notes if n not in notes and "deprecated" not in n]
        engine = getattr(result, "quantized_engine", None) or engine
        base_eval = baseline_evaluation(model=model, data=data, options=options, progress=progress.sub(0.5, 0.55))

        # ---- export: the real artifact and the fp16 baseline package
        artifact_path: Path | None = None
        artifact_kind: str | None = None
        export_seconds = None
        if options.export:
            start = time.perf_counter()
            from core.export import artifact_for

            with _library_output_into(notes):
                artifact_path, artifact_kind = artifact_for(
                    result, input_shape=model.input_shape, out_dir=artifacts_dir, progress=progress.sub(0.55, 0.66)
                )
            export_seconds = time.perf_counter() - start
        size_fp16, size_fp16_source = fp16_baseline_size(model=model, options=options, progress=progress.sub(0.66, 0.70), notes=notes)

        # ---- quality
        with quantized_engine(engine):
            cand_eval = _evaluate(module=result.module, data=data, options=options, progress=progress.sub(0.70, 0.80), label="Evaluating compressed model")
        quality = agreement_summary(baseline=base_eval, candidate=cand_eval, flipped_limit=options.flipped_limit)
        if quality["outputs_identical"]:
            notes.append("The compressed model's outputs are identical to the baseline's (output SNR is infinite).")
        if data.accuracy_meaningful:
            after = accuracy_summary(evaluation=cand_eval, num_classes=model.num_classes)
            before = accuracy_summary(evaluation=base_eval, num_classes=model.num_classes)
        else:
            after = before = {"accuracy_top1": None, "accuracy_top5": None, "per_class_accuracy": []}

        # ---- size
        estimate = _theoretical(model=model, result=result, artifact_kind=artifact_kind)
        size_bytes = path_size_bytes(artifact_path) if artifact_path is not None else None
        check = (
            size_check(artifact_bytes=size_bytes, theoretical_bytes=estimate.total_bytes, artifact_path=artifact_path)
            if size_bytes is not None
            else {"ratio": None, "ok": None, "note": "no artifact was exported (export disabled)."}
        )

        # ---- latency (A B A B) and memory
        candidate_runner: nn.Module = result.module
        timed_artifact = False
        if options.time_artifact and artifact_kind == "torchscript" and artifact_path is not None:
            candidate_runner, timed_artifact = _load_timed_artifact(artifact_path, result.module, model, notes)
        settings = options.latency_settings(model.input_shape)
        make_input = _input_factory(model.input_shape, options.seed)
        latency = None
        peak = base_peak = None
        with quantized_engine(engine):
            if options.measure_latency:
                latency = measure_interleaved(
                    runners={"baseline": model.module, "candidate": candidate_runner},
                    make_input=make_input,
                    settings=settings,
                    progress=progress.sub(0.80, 0.97),
                )
                for entry in latency["batches"].values():
                    entry["ratio"] = entry["candidate"]["p50_ms"] / entry["baseline"]["p50_ms"]
            if options.measure_memory:
                progress.update(0.97, "Peak memory of one inference")
                with _library_output_into(notes):
                    base_peak = peak_inference_memory_bytes(run=model.module, inputs=make_input(1), notes=notes)
                    peak = peak_inference_memory_bytes(run=candidate_runner, inputs=make_input(1), notes=notes)
        coreml = (
            coreml_latency(package=artifact_path, input_shape=model.input_shape, settings=settings)
            if artifact_kind == "mlpackage" and artifact_path is not None and options.measure_latency
            else None
        )

        # ---- histograms side file
        progress.update(0.99, "Saving weights for histograms")
        weights_path = write_weights_npz(
            weights=result.weights, path=artifacts_dir / "weights.npz", max_values=options.weights_sample, seed=options.seed
        )

        first_batch = str(settings.batch_sizes[0])
        cand_b1 = latency["batches"][first_batch]["candidate"] if latency else None
        base_b1 = latency["batches"][first_batch]["baseline"] if latency else None
        layers = []
        for layer in result.layers:
            row = layer.to_dict()
            extra = dict(row.get("extra") or {})
            if layer.name in estimate.per_layer_bytes:
                extra["theoretical_bytes"] = estimate.per_layer_bytes[layer.name]
                if layer.params:
                    extra["bits_per_weight"] = estimate.per_layer_bytes[layer.name] * 8 / layer.params
            row["extra"] = extra
            layers.append(row)
        record = {
            "kind": "experiment",
            **_model_fields(model),
            "spec": spec.to_dict(),
            "spec_summary": spec.summary(),
            "method": spec.method if not isinstance(spec, PipelineSpec) else "pipeline",
            "workflow": spec.workflow,
            "created_at": _now(),
            "compress_seconds": result.seconds,
            "export_seconds": export_seconds,
            "eval_seconds": cand_eval.seconds,
            "dataset": data.name,
            "dataset_source": data.source,
            "eval_images": data.size,
            "accuracy_meaningful": data.accuracy_meaningful,
            "accuracy_top1": after["accuracy_top1"],
            "accuracy_top5": after["accuracy_top5"],
            "baseline_accuracy_top1": before["accuracy_top1"],
            "baseline_accuracy_top5": before["accuracy_top5"],
            "per_class_accuracy": after["per_class_accuracy"],
            "baseline_per_class_accuracy": before["per_class_accuracy"],
            "class_names": data.class_names,
            **quality,
            "size_bytes": size_bytes,
            "artifact_path": str(artifact_path) if artifact_path is not None else None,
            "artifact_kind": artifact_kind,
            "size_fp32_bytes": model.size_fp32_bytes,
            "size_fp16_bytes": size_fp16,
            "size_fp16_source": size_fp16_source,
            "theoretical_size_bytes": estimate.total_bytes,
            "size_breakdown": estimate.rounded_breakdown(),
            "size_storage_format": estimate.storage_format,
            "bits_per_weight": estimate.bits_per_weight,
            "bits_per_weight_nominal": estimate.nominal_bits_per_weight,
            "compression_ratio_fp16": (size_fp16 / size_bytes) if size_bytes else None,
            "compression_ratio_fp32": (model.size_fp32_bytes / size_bytes) if size_bytes else None,
            "size_check": check,
            "latency_ms_p50": cand_b1["p50_ms"] if cand_b1 else None,
            "latency_ms_p90": cand_b1["p90_ms"] if cand_b1 else None,
            "baseline_latency_ms_p50": base_b1["p50_ms"] if base_b1 else None,
            "baseline_latency_ms_p90": base_b1["p90_ms"] if base_b1 else None,
            "latency_ratio": latency_ratio(latency, batch=settings.batch_sizes[0]) if latency else None,
            "latency": latency,
            "latency_note": latency_note(spec=spec, result=result, timed_artifact=timed_artifact),
            "latency_coreml": coreml,
            "runs_int8_kernels": result.runs_int8_kernels,
            "peak_memory_bytes": peak,
            "baseline_peak_memory_bytes": base_peak,
            "threads": settings.threads,
            "machine": describe_machine(threads=settings.threads),
            "layers": layers,
            "notes": notes,
            "calibration_source": result.calibration_source,
            "weights_path": str(weights_path) if weights_path is not None else None,
        }
        record = to_jsonable(record)
        json.dumps(record, allow_nan=False)  # fail here, not in the store, if anything is not plain JSON
        progress.update(1.0, "Done")
        return record


def _theoretical(*, model: LoadedModel, result: CompressionResult, artifact_kind: str | None) -> SizeEstimate:
    if result.runs_int8_kernels or artifact_kind == "torchscript":
        return module_payload_size(result.module)
    return theoretical_size(layers=result.layers, total_float_params=float_param_count(model.module), fmt=COREML_FORMAT)


def _load_timed_artifact(path: Path, module: nn.Module, model: LoadedModel, notes: list[str]) -> tuple[nn.Module, bool]:
    """The exported TorchScript, frozen for inference, if it reproduces the module's outputs; else the module."""
    try:
        with _library_output_into(notes):
            loaded = torch.jit.load(str(path), map_location="cpu").eval()
            frozen = torch.jit.freeze(loaded)
        probe = model.example_input(2)
        with torch.inference_mode():
            expected = module(probe)
            got = frozen(probe)
        if isinstance(expected, torch.Tensor) and isinstance(got, torch.Tensor) and torch.allclose(expected, got, atol=1e-4, rtol=1e-3):
            return frozen, True
        notes.append("The exported TorchScript's outputs differ from the module's; latency was timed on the module.")
    except Exception as exc:
        notes.append(f"Timing the TorchScript artifact failed ({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}); latency was timed on the module.")
    return module, False


def to_jsonable(value: object) -> object:
    """Plain JSON types only: numpy/tensor scalars → numbers, Paths → str, tuples → lists, inf/nan → None."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return finite_or_none(value)
    if isinstance(value, bool | int | str) or value is None:
        return value
    return str(value)
