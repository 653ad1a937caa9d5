"""Run one claimed job: reload its references, run what its kind says, and write the outcome to the queue.

``run_claimed_job`` is the one function both executors run: the local worker process calls it in its loop, the
Ray executor calls it inside a Ray task. It never raises for a job's own failure: the job row says what happened.
Models and datasets stay loaded between jobs (``WarmCache``, keyed by the reference and the file's mtime/size).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.jobs.origins import read_origin
from core.jobs.queue import BASELINE_JOB, EXPERIMENT_JOB, MLPACKAGE_JOB, RECIPE_SEARCH_JOB, Job, JobError, JobQueue
from core.jobs.refs import (
    DataRef,
    ModelRef,
    RefError,
    apply_latency_overrides,
    load_data_ref,
    load_model_ref,
    options_from_dict,
    split_latency_overrides,
)
from core.jobs.timing_lock import TimingLock
from core.paths import cache_dir
from core.progress import Cancelled, Progress

if TYPE_CHECKING:
    from core.data import Dataset
    from core.experiment_options import ExperimentOptions
    from core.models.sources import LoadedModel
    from core.specs import AnySpec
    from core.store import ExperimentStore

PROGRESS_WRITE_INTERVAL = 0.25  # seconds between progress writes to the job row (the last one always goes through)
HEARTBEAT_INTERVAL = 1.0
PHASES = ("load", "compress", "export", "evaluate", "latency", "memory", "save")


class WarmCache:
    """Models and datasets a worker keeps loaded between jobs (a few of each, least recently used dropped)."""

    def __init__(self, *, max_models: int = 2, max_datasets: int = 3) -> None:
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._datasets: OrderedDict[str, Dataset | None] = OrderedDict()
        self._limits = (max_models, max_datasets)
        self.hits = 0

    def model(self, *, ref: ModelRef) -> LoadedModel:
        key = ref.cache_key()
        if key in self._models:
            self.hits += 1
            self._models.move_to_end(key)
            return self._models[key]
        model = load_model_ref(ref=ref)
        self._models[key] = model
        while len(self._models) > self._limits[0]:
            self._models.popitem(last=False)
        return model

    def dataset(self, *, ref: DataRef, model: LoadedModel) -> Dataset | None:
        key = f"{ref.cache_key()}|{model.source_id}|{model.input_shape}|{model.num_classes}"
        if key in self._datasets:
            self.hits += 1
            self._datasets.move_to_end(key)
            return self._datasets[key]
        dataset = load_data_ref(ref=ref, model=model)
        self._datasets[key] = dataset
        while len(self._datasets) > self._limits[1]:
            self._datasets.popitem(last=False)
        return dataset


class JobProgress:
    """Maps a run's progress onto its job row: throttled writes, cancel requests turned into ``Cancelled``."""

    def __init__(self, *, queue: JobQueue, job_id: int) -> None:
        self.queue, self.job_id = queue, job_id
        self.progress = Progress(self._on_update)
        self.events: list[tuple[float, float, str]] = []  # (time, fraction, message): phase times are read off these
        self._last_write = 0.0

    def _on_update(self, fraction: float, message: str) -> None:
        now = time.perf_counter()
        self.events.append((now, fraction, message))
        if now - self._last_write >= PROGRESS_WRITE_INTERVAL or fraction >= 1.0:
            self._last_write = now
            if self.queue.report_progress(job_id=self.job_id, fraction=fraction, message=message):
                self.progress.cancel()
                raise Cancelled("cancelled by the user")

    def first_time(self, *, at_least: float = 0.0, message_prefix: str | None = None) -> float | None:
        for when, fraction, message in self.events:
            if fraction >= at_least and (message_prefix is None or message.startswith(message_prefix)):
                return when
        return None


class Heartbeat:
    """A thread that tells the queue every second that this worker (and its current job) is alive."""

    def __init__(self, *, queue: JobQueue, interval: float = HEARTBEAT_INTERVAL) -> None:
        self.queue, self.interval = queue, interval
        self.job_id: int | None = None
        self.progress: Progress | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="job-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                job_id, progress = self.job_id, self.progress
                if self.queue.heartbeat(job_id=job_id) and progress is not None:
                    progress.cancel()  # the next progress update raises Cancelled
            except Exception:  # a locked / briefly unavailable database: the next beat tries again
                continue


def one_line(exc: BaseException) -> str:
    """A job's failure reason: the message of the studio's own errors, type + first line for anything else."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, ValueError | FileNotFoundError) and text:  # the studio's errors are ValueErrors with advice
        return text[:300]
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


@dataclasses.dataclass(frozen=True)
class JobOutcome:
    """What a finished job produced: a saved experiment and/or a result for the job row, and its last message."""

    experiment_id: int | None = None
    result: dict | None = None
    message: str = "Done"


def run_claimed_job(
    *, queue: JobQueue, job: Job, cache: WarmCache | None = None, lock: TimingLock | None = None,
    heartbeat: Heartbeat | None = None,
) -> str:
    """Run `job` (already claimed by this process) to its end and record the outcome; returns the final state."""
    cache = cache or WarmCache()
    lock = lock or TimingLock()
    tracker = JobProgress(queue=queue, job_id=job.id)
    if heartbeat is not None:
        heartbeat.job_id, heartbeat.progress = job.id, tracker.progress
    phases: dict[str, float | None] = {}
    lock.reset()
    try:
        run = JOB_RUNNERS.get(job.kind)
        if run is None:
            raise JobError(f"this worker cannot run jobs of kind {job.kind!r} (known: {', '.join(JOB_RUNNERS)}); "
                           "update the studio on the worker machines.")
        outcome = run(queue=queue, job=job, cache=cache, lock=lock, tracker=tracker, phases=phases)
        queue.finish(job_id=job.id, experiment_id=outcome.experiment_id, phase_seconds=phases, result=outcome.result,
                     message=outcome.message)
        return "done"
    except Cancelled:
        queue.mark_cancelled(job_id=job.id)
        return "cancelled"
    except Exception as exc:
        queue.fail(job_id=job.id, reason=one_line(exc), phase_seconds=phases or None)
        return "failed"
    finally:
        queue.remove_staging(job_id=job.id)
        if heartbeat is not None:
            heartbeat.job_id, heartbeat.progress = None, None


def _run_experiment_job(
    *, queue: JobQueue, job: Job, cache: WarmCache, lock: TimingLock, tracker: JobProgress, phases: dict
) -> JobOutcome:
    """Kind "experiment": compress → export → measure → save, the record landing in the store."""
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
            store=_store(queue), model=model, spec=spec, dataset=dataset, options=options,
            progress=tracker.progress, staging_prefix=queue.staging_prefix(job_id=job.id), finalize=finalize,
            phases=phases,
        )
    return JobOutcome(experiment_id=int(record["id"]))


def _run_baseline_job(
    *, queue: JobQueue, job: Job, cache: WarmCache, lock: TimingLock, tracker: JobProgress, phases: dict
) -> JobOutcome:
    """Kind "baseline": the uncompressed model's record (accuracy, fp16 package, latency, memory), written to the
    data folder's baseline cache (``core.jobs.baselines``) so every page and process reads it from there."""
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


def _run_mlpackage_job(
    *, queue: JobQueue, job: Job, cache: WarmCache, lock: TimingLock, tracker: JobProgress, phases: dict
) -> JobOutcome:
    """Kind "mlpackage": compress an uploaded .mlpackage on the Core ML side and save it as an experiment."""
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
            store=_store(queue), package_path=path, spec=spec, progress=tracker.progress,
            label=job.model_ref.name or None, staging_prefix=queue.staging_prefix(job_id=job.id), finalize=finalize,
        )
    return JobOutcome(experiment_id=int(record["id"]))


def _run_recipe_search_job(
    *, queue: JobQueue, job: Job, cache: WarmCache, lock: TimingLock, tracker: JobProgress, phases: dict
) -> JobOutcome:
    """Kind "recipe_search": the measured mixed-precision search (core.explore.recipe_runs owns it; imported
    here only when such a job runs), then, when asked, the chosen recipe as an experiment."""
    from core.explore.recipe_runs import run_search_job

    return run_search_job(queue=queue, job=job, cache=cache, lock=lock, tracker=tracker, phases=phases)


# What each job kind (core.jobs.queue.JOB_KINDS) runs; every runner returns a JobOutcome or raises.
JOB_RUNNERS: dict[str, Callable[..., JobOutcome]] = {
    EXPERIMENT_JOB: _run_experiment_job,
    BASELINE_JOB: _run_baseline_job,
    MLPACKAGE_JOB: _run_mlpackage_job,
    RECIPE_SEARCH_JOB: _run_recipe_search_job,
}


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


_stores: dict[Path, ExperimentStore] = {}


def _store(queue: JobQueue) -> ExperimentStore:
    from core.store import ExperimentStore

    if queue.home not in _stores:
        _stores[queue.home] = ExperimentStore(queue.home)
    return _stores[queue.home]
