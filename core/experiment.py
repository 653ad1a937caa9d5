"""One experiment end to end: compress a copy → export the artifact → measure it against the baseline → a record.

``run_experiment`` is a short sequence of named steps; the pieces live in their own modules: evaluation data
(``core.evaluation``), the baseline caches and fp16 baseline package (``core.baseline``), the record schema and
builder (``core.records``). Saving a run in the store is ``core.runs.run_and_save``.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.baseline import (
    baseline_evaluation,
    baseline_peak_memory,
    baseline_record,
    clear_caches,
    fp16_baseline_size,
    model_fingerprint,
)
from core.compress.result import CompressionResult
from core.data import Dataset
from core.evaluation import EvalData, evaluate, input_factory, resolve_eval_data
from core.experiment_options import ExperimentOptions, default_latency_settings
from core.jsonable import to_jsonable
from core.measure.latency import (
    CONFIRMATION_REPEATS,
    CONFIRMATION_TOLERANCE,
    LatencySettings,
    confirmation_holds,
    confirmation_settings,
    coreml_latency,
    latency_ratio,
    measure_interleaved,
    quantized_engine,
    same_computation,
)
from core.measure.memory import peak_inference_memory_bytes
from core.measure.quality import Evaluation, agreement_summary, collect_logits, topk_accuracy
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
from core.models.sources import LoadedModel
from core.progress import Progress, as_progress, library_notes_into, library_version_warnings
from core.records import (
    EXPERIMENT,
    accuracy_fields,
    build_record,
    data_fields,
    latency_fields,
    layer_rows,
    machine_fields,
    model_fields,
    size_fields,
    spec_fields,
)
from core.specs import AnySpec

__all__ = [  # the public face of experiments; the names come from the modules that own them
    "EvalData",
    "ExperimentOptions",
    "baseline_evaluation",
    "baseline_record",
    "clear_caches",
    "default_latency_settings",
    "fp16_baseline_size",
    "model_fingerprint",
    "resolve_eval_data",
    "run_experiment",
    "to_jsonable",
]


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
    progress = as_progress(progress)
    options = options or ExperimentOptions()
    data = resolve_eval_data(model=model, dataset=dataset, options=options)
    run = _Run(model=model, spec=spec, data=data, options=options, out_dir=Path(artifacts_dir),
               notes=list(data.notes) + library_version_warnings())
    with _cleanup_on_failure(run.out_dir):
        run.out_dir.mkdir(parents=True, exist_ok=True)
        # Compress first: a spec the engine refuses fails at once, before minutes of baseline evaluation.
        with run.clock("compress"):
            result = _compress(run, progress.sub(0.0, 0.5))
        artifact, fp16, base_eval, cand_eval = _export_and_evaluate(run, result, progress)
        with run.clock("artifact_check"):
            artifact_check = _check_artifact(run, result, artifact, progress)
        quality = _compare_outputs(run, base_eval, cand_eval)
        validation = _validate(run, result)
        speed, timed_artifact = _measure_speed(run, result, artifact, progress.sub(0.80, 0.97))
        with run.clock("weights"):
            weights_path = _save_weights(run, result, progress)
        record = _experiment_record(
            run,
            result=result,
            base_eval=base_eval,
            cand_eval=cand_eval,
            quality={**quality, **validation},
            artifact=artifact,
            artifact_check=artifact_check,
            fp16=fp16,
            speed=speed,
            timed_artifact=timed_artifact,
            weights_path=weights_path,
        )
        progress.update(1.0, "Done")
        return record


# --------------------------------------------------------------------------- the steps


@dataclass
class _Run:
    """What every step of one run reads: the inputs, the artifacts folder, and the notes it adds to."""

    model: LoadedModel
    spec: AnySpec
    data: EvalData
    options: ExperimentOptions
    out_dir: Path
    notes: list[str]
    phases: dict[str, float] = field(default_factory=dict)  # wall seconds per phase (the record's phase_seconds)

    @contextlib.contextmanager
    def clock(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.phases[phase] = self.phases.get(phase, 0.0) + time.perf_counter() - started


class _Background:
    """One step on a helper thread: ``wait()`` until it ends, ``result()`` its value (or its exception, re-raised)."""

    def __init__(self, work: Callable[[], object]) -> None:
        self._work, self._value, self._error = work, None, None
        self._thread = threading.Thread(target=self._run, name="experiment-export", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._work()
        except BaseException as exc:  # handed to the main thread by result()
            self._error = exc

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> Any:
        self.wait()
        if self._error is not None:
            raise self._error
        return self._value


def _export_and_evaluate(
    run: _Run, result: CompressionResult, progress: Progress
) -> tuple[Artifact, tuple[int, str], Evaluation, Evaluation]:
    """The artifact, the fp16 baseline package size, and the logits of the baseline and the candidate.

    Core ML conversion is mostly single-threaded Python and evaluation multi-threaded torch, so by default the
    exports run on a helper thread beside the evaluations (``options.overlap_export``); both are over before the
    caller times latency.
    """
    options = run.options
    if not (options.overlap_export and options.export):
        base_eval = _evaluate_baseline(run, progress.sub(0.5, 0.55))
        artifact, fp16, notes = _exports(run, result, progress.sub(0.55, 0.66), progress.sub(0.66, 0.70))
        cand_eval = _evaluate_candidate(run, result, progress.sub(0.70, 0.80))
    else:
        in_background = _artifact_in_background(run, result)
        early = None if in_background else _exports(run, result, None, None, fp16=False)
        what = "Core ML export" if in_background else "fp16 baseline package"
        progress.update(0.5, f"{what} started on a helper thread")
        exports = _Background(lambda: _exports(run, result, None, None, artifact=in_background))
        try:
            base_eval = _evaluate_baseline(run, progress.sub(0.5, 0.55))
            cand_eval = _evaluate_candidate(run, result, progress.sub(0.70, 0.79))
        except BaseException:
            exports.wait()  # nothing may still write into the folder the clean-up empties
            raise
        progress.update(0.795, f"Waiting for the {what}")
        with run.clock("export_wait"):
            artifact, fp16, notes = exports.result()
        if early is not None:
            artifact, notes = early[0], early[2] + notes
    run.notes += [n for n in notes if n not in run.notes]
    return artifact, fp16, base_eval, cand_eval


def _artifact_in_background(run: _Run, result: CompressionResult) -> bool:
    """Only a float result's artifact is written on the helper thread: an int8 module's TorchScript trace needs the
    quantized engine, which is process-wide and switched by the candidate's evaluation on the main thread (so it is
    traced first, before the helper starts; the fp16 baseline package is a float model and goes to the helper)."""
    return not result.runs_int8_kernels and _engine(run, result) is None


def _exports(
    run: _Run,
    result: CompressionResult,
    progress: Progress | None,
    fp16_progress: Progress | None,
    *,
    artifact: bool = True,
    fp16: bool = True,
) -> tuple[Artifact, tuple[int, str] | None, list[str]]:
    """The artifact and the fp16 baseline package size (exported once per model weights); the notes they left.

    Phases "export" (the artifact) and "fp16_baseline" (≈0 once the package is cached); on the helper thread they
    overlap the evaluation phases. Never two at once: both capture the process-wide stdout / warnings.
    """
    notes: list[str] = []
    exported, size = Artifact(), None
    if artifact:
        with run.clock("export"):
            exported = _export(run, result, as_progress(progress), notes)
    if fp16:
        with run.clock("fp16_baseline"):
            size = fp16_baseline_size(model=run.model, options=run.options, progress=fp16_progress, notes=notes)
    return exported, size, notes


def _evaluate_baseline(run: _Run, progress: Progress) -> Evaluation:
    """The uncompressed model's logits: computed once per (weights, evaluation set), then cached."""
    with run.clock("baseline"):
        return baseline_evaluation(model=run.model, data=run.data, options=run.options, progress=progress)


@dataclass(frozen=True)
class Artifact:
    """The exported file a result is measured by (none when export is off)."""

    path: Path | None = None
    kind: str | None = None
    seconds: float | None = None

    @property
    def size_bytes(self) -> int | None:
        return path_size_bytes(self.path) if self.path is not None else None


def _compress(run: _Run, progress: Progress) -> CompressionResult:
    from core.compress import compress  # the engine; imported here so measurement loads without it

    result = compress(model=run.model, spec=run.spec, dataset=run.data.dataset, progress=progress,
                      timing_guard=run.options.timing_guard, cache_root=run.options.cache_root())
    run.notes += [n for n in result.notes if n not in run.notes]  # deprecations kept: the result card lists them
    return result


def _engine(run: _Run, result: CompressionResult) -> str | None:
    """The quantized engine (x86, onednn …) a torch.ao int8 result runs on; None for float results."""
    return getattr(result, "quantized_engine", None) or _engine_for(run.spec)


def _engine_for(spec: AnySpec | None) -> str | None:
    backend = getattr(spec, "backend", None)
    return (
        {"x86": "x86", "fbgemm": "fbgemm", "qnnpack": "qnnpack", "onednn": "onednn"}.get(backend) if backend else None
    )


def _export(run: _Run, result: CompressionResult, progress: Progress, notes: list[str]) -> Artifact:
    if not run.options.export:
        return Artifact()
    from core.export import artifact_for

    start = time.perf_counter()
    with library_notes_into(notes):
        path, kind = artifact_for(result, input_shape=run.model.input_shape, out_dir=run.out_dir, progress=progress)
    return Artifact(path=path, kind=kind, seconds=time.perf_counter() - start)


def _check_artifact(run: _Run, result: CompressionResult, artifact: Artifact, progress: Progress) -> dict | None:
    """The artifact's weights decoded and compared with the evaluated module's (core.measure.artifact_weights).

    None when nothing was exported. An artifact that cannot be read back does not match; a check that fails for
    another reason is reported as not checked (match None), with the reason."""
    if artifact.path is None or artifact.kind is None:
        return None
    from core.measure.artifact_weights import ArtifactReadError, check_artifact_weights

    progress.update(0.8, f"Reading the {artifact.kind}'s weights back")
    try:
        with quantized_engine(_engine(run, result)):  # a TorchScript int8 file re-packs its weights for the engine
            return check_artifact_weights(module=result.module, artifact_path=artifact.path,
                                          artifact_kind=artifact.kind, payload_module=result.payload_module).to_dict()
    except ArtifactReadError as exc:
        return {"match": False, "summary": f"the artifact could not be read back: {exc}", "mismatched": []}
    except Exception as exc:  # a failed check must not lose the run; the record says it was not checked, and why
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return {"match": None, "summary": f"the artifact's weights could not be checked ({reason}).", "mismatched": []}


def _evaluate_candidate(run: _Run, result: CompressionResult, progress: Progress) -> Evaluation:
    with run.clock("evaluate"), quantized_engine(_engine(run, result)):
        return evaluate(
            module=result.module,
            data=run.data,
            options=run.options,
            progress=progress,
            label="Evaluating compressed model",
        )


def _validate(run: _Run, result: CompressionResult) -> dict:
    """Top-1 of both models on a class-balanced slice of the training pool (options.validation_images), for
    choosing between candidates without looking at the test images; {} when not asked for or without labels."""
    size, dataset = run.options.validation_images, run.data.dataset
    if not size or dataset is None or not run.data.accuracy_meaningful or not len(dataset.train):
        return {}
    split = dataset.validation_split(size=size)
    with run.clock("validate"):
        base = collect_logits(module=run.model.module, dataset=dataset, split=split,
                              batch_size=run.options.eval_batch_size, label="Validating the baseline")
        with quantized_engine(_engine(run, result)):
            cand = collect_logits(module=result.module, dataset=dataset, split=split,
                                  batch_size=run.options.eval_batch_size, label="Validating the compressed model")
    source = dataset.source.split(" (", 1)[0]
    return {
        "validation_images": len(split),
        "validation_source": f"{len(split):,} class-balanced images of the {dataset.name} training pool ({source}); "
        "never test images",
        "validation_accuracy_top1": topk_accuracy(logits=cand.logits, labels=cand.labels, k=1),
        "baseline_validation_accuracy_top1": topk_accuracy(logits=base.logits, labels=base.labels, k=1),
    }


def _compare_outputs(run: _Run, baseline: Evaluation, candidate: Evaluation) -> dict:
    quality = agreement_summary(baseline=baseline, candidate=candidate, flipped_limit=run.options.flipped_limit,
                                dataset_indices=run.data.dataset_indices)
    if quality["outputs_identical"]:
        run.notes.append("The compressed model's outputs are identical to the baseline's (output SNR is infinite).")
    return quality


def _theoretical(*, model: LoadedModel, result: CompressionResult, artifact_kind: str | None) -> SizeEstimate:
    if result.runs_int8_kernels or artifact_kind == "torchscript":
        return module_payload_size(result.payload_module or result.module)  # a frozen form keeps no state_dict
    return theoretical_size(layers=result.layers, total_float_params=float_param_count(model.module), fmt=COREML_FORMAT)


def _size_check(artifact: Artifact, estimate: SizeEstimate) -> dict:
    if artifact.path is None:
        return {"ratio": None, "ok": None, "note": "no artifact was exported (export disabled)."}
    return size_check(
        artifact_bytes=artifact.size_bytes, theoretical_bytes=estimate.total_bytes, artifact_path=artifact.path
    )


def _measure_speed(run: _Run, result: CompressionResult, artifact: Artifact, progress: Progress) -> tuple[dict, bool]:
    """A/B latency (baseline and candidate interleaved), peak memory of both, and Core ML latency where it runs.

    A candidate that runs the baseline's exact operations (``same_computation``) gets a short confirmation timing
    and the baseline's peak memory instead of full measurements (``options.skip_known``; the notes say so).
    Returns the record fields and whether the exported TorchScript (rather than the module) was timed.
    """
    model, options, notes = run.model, run.options, run.notes
    candidate: nn.Module = result.module
    timed_artifact = False
    if options.time_artifact and artifact.kind == "torchscript" and artifact.path is not None:
        candidate, timed_artifact = _load_timed_artifact(artifact.path, result.module, model, notes)
    known = _known_by_construction(run, result, candidate, timed_artifact)
    settings = options.latency_settings(model.input_shape)
    make_input = input_factory(model.input_shape, options.seed)
    latency = peak = base_peak = coreml = None
    with quantized_engine(_engine(run, result)):
        if options.measure_latency:
            with run.clock("latency"), _timing(options):
                runners = {"baseline": model.module, "candidate": candidate}
                latency = _time_ab(runners=runners, make_input=make_input, settings=settings, known=known,
                                   notes=notes, progress=progress)
                for entry in latency["batches"].values():
                    entry["ratio"] = entry["candidate"]["p50_ms"] / entry["baseline"]["p50_ms"]
                if artifact.kind == "mlpackage" and artifact.path is not None:
                    coreml = coreml_latency(package=artifact.path, input_shape=model.input_shape, settings=settings)
        if options.measure_memory:
            progress.update(1.0, "Peak memory of one inference")
            with run.clock("memory"):
                base_peak = baseline_peak_memory(model=model, options=options, notes=notes)
                if known:
                    peak = base_peak
                    notes.append(
                        "Peak memory: the baseline's, not profiled again: the compressed model runs the same "
                        "operations on tensors of the same shapes (only weight values differ)."
                    )
                else:
                    with library_notes_into(notes):
                        peak = peak_inference_memory_bytes(run=candidate, inputs=make_input(1), notes=notes)
    return {
        **latency_fields(latency, settings=settings, runner="candidate"),
        **latency_fields(latency, settings=settings, runner="baseline", prefix="baseline_"),
        "latency_ratio": latency_ratio(latency, batch=settings.batch_sizes[0]) if latency else None,
        "latency": latency,
        "latency_coreml": coreml,
        "peak_memory_bytes": peak,
        "baseline_peak_memory_bytes": base_peak,
    }, timed_artifact


def _known_by_construction(run: _Run, result: CompressionResult, candidate: nn.Module, timed_artifact: bool) -> bool:
    """True when the candidate's latency and peak memory equal the baseline's by construction: it runs the
    baseline's exact operations, only with other weight values (decompressed palettized / quantized / pruned)."""
    if not run.options.skip_known or timed_artifact or result.runs_int8_kernels:
        return False
    return same_computation(baseline=run.model.module, candidate=candidate) is None


def _timing(options: ExperimentOptions) -> contextlib.AbstractContextManager:
    """The job runner's machine-wide timing lock when there is one (no other job computes while this one times)."""
    return options.timing_guard() if options.timing_guard is not None else contextlib.nullcontext()


def _time_ab(
    *,
    runners: dict[str, nn.Module],
    make_input: Callable[[int], torch.Tensor],
    settings: LatencySettings,
    known: bool,
    notes: list[str],
    progress: Progress,
) -> dict:
    """Interleaved A/B latency: in full, or a short confirmation where the answer is known by construction (and
    in full after all if the confirmation disagrees). ``latency["mode"]`` says which."""
    if known:
        short = confirmation_settings(settings)
        latency = measure_interleaved(
            runners=runners, make_input=make_input, settings=short, progress=progress.sub(0.0, 0.25)
        )
        if confirmation_holds(latency):
            latency["mode"] = "confirmation"
            notes.append(
                f"Latency: a short confirmation ({CONFIRMATION_REPEATS} interleaved calls per batch size) instead of "
                "the full measurement: the compressed model runs the baseline's exact operations with decompressed "
                "weights, so its CPU latency matches the baseline's by construction."
            )
            return latency
        ratios = ", ".join(
            f"batch {b}: {e['candidate']['p50_ms'] / e['baseline']['p50_ms']:.2f}" for b, e in latency["batches"].items()
        )
        notes.append(
            f"Latency: the short confirmation disagreed with the baseline by more than {CONFIRMATION_TOLERANCE:.0%} "
            f"({ratios}), so latency was measured in full."
        )
        progress = progress.sub(0.25, 1.0)
    latency = measure_interleaved(runners=runners, make_input=make_input, settings=settings, progress=progress)
    latency["mode"] = "full"
    return latency


def _save_weights(run: _Run, result: CompressionResult, progress: Progress) -> Path | None:
    """weights.npz: a sample of every layer's original and compressed weights, for the histograms."""
    progress.update(0.99, "Saving weights for histograms")
    path, options = run.out_dir / "weights.npz", run.options
    return write_weights_npz(weights=result.weights, path=path, max_values=options.weights_sample, seed=options.seed)


def _experiment_record(
    run: _Run,
    *,
    result: CompressionResult,
    base_eval: Evaluation,
    cand_eval: Evaluation,
    quality: dict,
    artifact: Artifact,
    artifact_check: dict | None,
    fp16: tuple[int, str],
    speed: dict,
    timed_artifact: bool,
    weights_path: Path | None,
) -> dict:
    """The measurements of the steps, as one experiment record (core.records' schema)."""
    model, spec, data = run.model, run.spec, run.data
    size_fp16, size_fp16_source = fp16
    estimate = _theoretical(model=model, result=result, artifact_kind=artifact.kind)
    return build_record(
        EXPERIMENT,
        **model_fields(model),
        **spec_fields(spec),
        **data_fields(data),
        compress_seconds=result.seconds,
        export_seconds=artifact.seconds,
        eval_seconds=cand_eval.seconds,
        **accuracy_fields(cand_eval, data=data, num_classes=model.num_classes),
        **accuracy_fields(base_eval, data=data, num_classes=model.num_classes, prefix="baseline_"),
        **quality,
        artifact_path=artifact.path,
        artifact_kind=artifact.kind,
        artifact_weights_match=artifact_check["match"] if artifact_check else None,
        artifact_weights_check=artifact_check,
        size_fp32_bytes=model.size_fp32_bytes,
        size_fp16_bytes=size_fp16,
        size_fp16_source=size_fp16_source,
        **size_fields(
            size_bytes=artifact.size_bytes,
            size_fp16_bytes=size_fp16,
            size_fp32_bytes=model.size_fp32_bytes,
            estimate=estimate,
            check=_size_check(artifact, estimate),
        ),
        **speed,
        latency_note=_latency_note(spec=spec, result=result, timed_artifact=timed_artifact),
        runs_int8_kernels=result.runs_int8_kernels,
        int8_form=result.int8_form,
        **_machine_fields(run, result),
        layers=layer_rows(result, estimate),
        notes=run.notes,
        calibration_source=result.calibration_source,
        weights_path=weights_path,
        # this run's own phases; a job runner adds load and save (and the time the job waited for them)
        phase_seconds={phase: round(seconds, 4) for phase, seconds in run.phases.items()},
    )


def _machine_fields(run: _Run, result: CompressionResult) -> dict:
    """The machine description, read while the result's quantized engine is in force (so it names the engine the
    int8 result was evaluated and timed on, not the process default)."""
    with quantized_engine(_engine(run, result)):
        return machine_fields(run.options.latency_settings(run.model.input_shape))


def _latency_note(*, spec: AnySpec, result: CompressionResult, timed_artifact: bool) -> str:
    """What the CPU latency of this method means, in the method's own words (its registry descriptor)."""
    from core.compress.registry import descriptor_for

    return descriptor_for(spec).latency_note(spec=spec, result=result, timed_artifact=timed_artifact)


def _load_timed_artifact(path: Path, module: nn.Module, model: LoadedModel, notes: list[str]) -> tuple[nn.Module, bool]:
    """The exported TorchScript, frozen for inference, if it reproduces the module's outputs; else the module."""
    try:
        with library_notes_into(notes):
            loaded = torch.jit.load(str(path), map_location="cpu").eval()
            frozen = torch.jit.freeze(loaded)
        probe = model.example_input(2)
        with torch.inference_mode():
            expected = module(probe)
            got = frozen(probe)
        if (
            isinstance(expected, torch.Tensor)
            and isinstance(got, torch.Tensor)
            and torch.allclose(expected, got, atol=1e-4, rtol=1e-3)
        ):
            return frozen, True
        notes.append("The exported TorchScript's outputs differ from the module's; latency was timed on the module.")
    except Exception as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        notes.append(f"Timing the TorchScript artifact failed ({reason}); latency was timed on the module.")
    return module, False


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
