"""A compression run in a background thread, so the page can poll it: reruns never interrupt the work."""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from core.data import Dataset
from core.experiment_options import ExperimentOptions
from core.models.sources import LoadedModel
from core.progress import Cancelled, Progress
from core.runs import run_and_save
from core.specs import AnySpec
from pages._ui.errors import LOG, friendly_message
from pages._ui.storage import store


@dataclass
class RunJob:
    """One run's live state: progress, the steps seen so far, and its outcome (record, error or cancelled)."""

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
    """Start compress → export → measure → save (core.runs.run_and_save) in a thread; return its job at once.

    Nothing is saved unless every step succeeds; a cancel leaves nothing behind.
    """
    experiment_store = store()
    options = ExperimentOptions(eval_limit=limit)
    job = RunJob(summary=spec.summary(), model_label=model.label)
    job.progress = Progress(job.on_progress)

    def work() -> None:
        try:
            job.record = run_and_save(store=experiment_store, model=model, spec=spec, dataset=dataset,
                                      options=options, progress=job.progress)
            job.experiment_id = int(job.record["id"])
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
