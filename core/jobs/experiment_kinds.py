"""The job kinds of the job layer itself: an experiment, a model's baseline, an uploaded .mlpackage compressed.

Each registers itself by subclassing ``core.jobs.kinds.JobKind``; heavy imports (torch, coremltools) stay inside
the functions, so importing this module to submit a job is cheap.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.jobs.kinds import JobContext, JobKind, JobOutcome
from core.jobs.origins import read_origin
from core.jobs.queue import BASELINE_JOB, EXPERIMENT_JOB, MLPACKAGE_JOB
from core.jobs.refs import RefError, apply_latency_overrides, options_from_dict, split_latency_overrides
from core.paths import cache_dir

if TYPE_CHECKING:
    from core.data import Dataset
    from core.experiment_options import ExperimentOptions
    from core.jobs.runner import JobProgress
    from core.models.sources import LoadedModel
    from core.progress import Progress
    from core.specs import AnySpec
    from core.store import ExperimentStore


class ExperimentKind(JobKind):
    """compress → export → measure → save, the record landing in the store."""

    kind = EXPERIMENT_JOB

    def run(self, context: JobContext) -> JobOutcome:
        return _run_experiment_job(context)


class BaselineKind(JobKind):
    """The uncompressed model's record, written to the data folder's baseline cache."""

    kind = BASELINE_JOB

    def run(self, context: JobContext) -> JobOutcome:
        return _run_baseline_job(context)


class MlpackageKind(JobKind):
    """An uploaded .mlpackage compressed on the Core ML side and saved as an experiment."""

    kind = MLPACKAGE_JOB

    def run(self, context: JobContext) -> JobOutcome:
        return _run_mlpackage_job(context)


def _run_experiment_job(context: JobContext) -> JobOutcome:
    """Kind "experiment": compress → export → measure → save, the record landing in the store."""
    queue, job, cache, lock, tracker, phases = (context.queue, context.job, context.cache, context.lock,
                                                context.tracker, context.phases)
    from core.specs import spec_from_dict

    spec = spec_from_dict(job.spec)
    option_values, latency_overrides = split_latency_overrides(data=job.options)
    options = options_from_dict(data=option_values, cache_dir=cache_dir(queue.home))  # the job's folder's cache
    guard_supported = _options_take_timing_guard()
    # Without the timing hook in run_experiment, a job that times holds the lock exclusively throughout:
    # slower under load, never wrong.
    whole_run_exclusive = options.measure_latency and not guard_supported
    if guard_supported:
        options = dataclasses.replace(options, timing_guard=lock.timing)
    with lock.timing() if whole_run_exclusive else lock.compute():
        started = time.perf_counter()
        tracker.progress.update(0.0, "Loading the model and data")
        model = cache.model(ref=job.model_ref)
        dataset = cache.dataset(ref=job.data_ref, model=model)
        options = apply_latency_overrides(options=options, overrides=latency_overrides,
                                          input_shape=model.input_shape)
        phases["load"] = time.perf_counter() - started

        def finalize(record: dict, run_seconds: float) -> None:
            # the run's own per-phase clock is exact; progress events are only a fallback for older runners
            measured = record.get("phase_seconds") or _phases_from(record=record, tracker=tracker,
                                                                    run_seconds=run_seconds)
            phases.update({**measured, "run": run_seconds})
            timed = options.measure_latency and (whole_run_exclusive or bool(lock.timed_exclusively))
            record["timing_exclusive"] = bool(timed) if options.measure_latency else None
            record["job_id"] = job.id
            record["origin"] = read_origin(db_path=queue.db_path, job_id=job.id)
            record["phase_seconds"] = dict(phases)

        record = save_experiment(
            store=context.store(), model=model, spec=spec, dataset=dataset, options=options,
            progress=tracker.progress, staging_prefix=queue.staging_prefix(job_id=job.id), finalize=finalize,
            phases=phases,
        )
    return JobOutcome(experiment_id=int(record["id"]))


def _run_baseline_job(context: JobContext) -> JobOutcome:
    """Kind "baseline": the uncompressed model's record (accuracy, fp16 package, latency, memory), written to the
    data folder's baseline cache (``core.jobs.baselines``) so every page and process reads it from there."""
    queue, job, cache, lock, tracker, phases = (context.queue, context.job, context.cache, context.lock,
                                                context.tracker, context.phases)
    from core.jobs.baselines import measure_baseline, resolve_options

    with lock.compute():
        started = time.perf_counter()
        tracker.progress.update(0.0, "Loading the model and data")
        model = cache.model(ref=job.model_ref)
        dataset = cache.dataset(ref=job.data_ref, model=model)
        options = resolve_options(options=job.options, input_shape=model.input_shape, cache_dir=cache_dir(queue.home))
        options = dataclasses.replace(options, timing_guard=lock.timing)  # latency alone on the machine
        phases["load"] = time.perf_counter() - started
        started = time.perf_counter()
        key, record = measure_baseline(model=model, dataset=dataset, options=options,
                                       progress=tracker.progress.sub(0.02, 1.0),
                                       timed_exclusively=lambda: lock.timed_exclusively)
        phases["baseline"] = time.perf_counter() - started
    return JobOutcome(result={"cache_key": key, "record": record}, message="Baseline measured")


def _run_mlpackage_job(context: JobContext) -> JobOutcome:
    """Kind "mlpackage": compress an uploaded .mlpackage on the Core ML side and save it as an experiment."""
    queue, job, lock, tracker, phases = context.queue, context.job, context.lock, context.tracker, context.phases
    from core.runs import run_mlpackage_and_save
    from core.specs import spec_from_dict

    path = Path(job.model_ref.path or "")
    if not path.exists():
        raise RefError(f"Core ML package {path.name} is gone ({path}); upload it again and resubmit.")
    spec = spec_from_dict(job.spec)

    def finalize(record: dict, run_seconds: float) -> None:
        phases.update({"compress": record.get("compress_seconds"), "run": run_seconds})
        record["job_id"] = job.id
        record["origin"] = read_origin(db_path=queue.db_path, job_id=job.id)
        record["phase_seconds"] = dict(phases)

    with lock.compute():  # nothing is timed: Core ML predictions do not run here
        record = run_mlpackage_and_save(
            store=context.store(), package_path=path, spec=spec, progress=tracker.progress,
            label=job.model_ref.name or None, staging_prefix=queue.staging_prefix(job_id=job.id), finalize=finalize,
        )
    return JobOutcome(experiment_id=int(record["id"]))


def save_experiment(
    *,
    store: ExperimentStore,
    model: LoadedModel,
    spec: AnySpec,
    dataset: Dataset | None,
    options: ExperimentOptions,
    progress: Progress,
    staging_prefix: str,
    finalize: Callable[[dict, float], None],
    phases: dict[str, Any],
) -> dict:
    """Staging folder named after the job → run_experiment → atomic store.add (``core.runs.run_and_save``).

    Returns the saved record (with its ``id``); ``phases["save"]`` gets the time from the end of the run to the
    committed row.
    """
    from core.runs import run_and_save

    finished_run: list[float] = []

    def finalize_and_clock(record: dict, run_seconds: float) -> None:
        finalize(record, run_seconds)
        finished_run.append(time.perf_counter())

    record = run_and_save(
        store=store, model=model, spec=spec, dataset=dataset, options=options, progress=progress,
        staging_prefix=staging_prefix, finalize=finalize_and_clock,
    )
    if finished_run:
        phases["save"] = time.perf_counter() - finished_run[0]
    return record


def _phases_from(*, record: dict, tracker: JobProgress, run_seconds: float) -> dict[str, float | None]:
    """Phase times of a run: the record's own timings, latency and memory read off the progress events."""
    latency_start = tracker.first_time(at_least=0.80)
    memory_start = tracker.first_time(message_prefix="Peak memory")
    weights_start = tracker.first_time(at_least=0.99)
    latency = memory = None
    if latency_start is not None:
        latency = ((memory_start or weights_start or latency_start) - latency_start) if record.get("latency") else 0.0
    if memory_start is not None:
        memory = (weights_start or memory_start) - memory_start
    evaluate = record.get("eval_seconds")
    baseline = _span(tracker, 0.50, 0.55) + _span(tracker, 0.66, 0.70)  # baseline logits + fp16 baseline package
    return {
        "compress": record.get("compress_seconds"),
        "export": record.get("export_seconds"),
        "evaluate": evaluate,
        "latency": latency,
        "memory": memory,
        "baseline": baseline,
        "run": run_seconds,
    }


def _span(tracker: JobProgress, start: float, end: float) -> float:
    """Seconds between the first progress event at/after `start` and the first at/after `end` (0 if unseen)."""
    first, last = tracker.first_time(at_least=start), tracker.first_time(at_least=end)
    return max(0.0, last - first) if first is not None and last is not None else 0.0


def _options_take_timing_guard() -> bool:
    from core.experiment_options import ExperimentOptions

    return "timing_guard" in {f.name for f in dataclasses.fields(ExperimentOptions)}


