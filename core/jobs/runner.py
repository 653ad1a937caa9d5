"""Run one claimed job: find its kind (``core.jobs.kinds``), run it, and write the outcome to the queue.

``run_claimed_job`` is the one function both executors run: the local worker process calls it in its loop, the
Ray executor calls it inside a Ray task. It never raises for a job's own failure: the job row says what happened.
Models and datasets stay loaded between jobs (``WarmCache``, keyed by the reference and the file's mtime/size).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from core.jobs.kinds import JobContext, JobOutcome, find_kind
from core.jobs.queue import Job, JobQueue
from core.jobs.refs import DataRef, ModelRef, load_data_ref, load_model_ref
from core.jobs.timing_lock import TimingLock
from core.progress import Cancelled, Progress

if TYPE_CHECKING:
    from core.data import Dataset
    from core.models.sources import LoadedModel

PROGRESS_WRITE_INTERVAL = 0.25  # seconds between progress writes to the job row (the last one always goes through)
HEARTBEAT_INTERVAL = 1.0
PHASES = ("load", "compress", "export", "evaluate", "latency", "memory", "save")
__all__ = ["PHASES", "Heartbeat", "JobOutcome", "JobProgress", "WarmCache", "one_line", "run_claimed_job"]


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
        kind = find_kind(job.kind)  # registered by its own module (core.jobs.kinds); the runner names none
        context = JobContext(queue=queue, job=job, cache=cache, lock=lock, tracker=tracker, phases=phases)
        outcome = kind().run(context)
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


