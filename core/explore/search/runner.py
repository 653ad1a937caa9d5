"""Running a search: its stages submit runs as jobs (experiments, and the sensitivity analysis when none is
cached) and wait for them, then the winner is picked from the store and written into the search book.

``run_search`` runs wherever it is called: in a worker as job kind ``budget_search`` (what the dashboard
submits: core.explore.search.job), or in the foreground of ``python -m core.cli search``. Progress goes to
`on_progress`; in a worker that is the job's progress, which raises ``Cancelled`` when the user cancels — the
search then cancels its unfinished runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.explore.search.book import SearchBook, SearchCancelled
from core.explore.search.candidates import SearchResult, has_validation, pick_winner
from core.explore.search.goal import SearchGoal
from core.explore.search.plan import (
    REFINE_ROUNDS,
    missing_configs,
    mixed_precision_specs,
    parent_of,
    refinement_specs,
)
from core.jobs.refs import DataRef, ModelRef
from core.progress import Cancelled
from core.specs import spec_from_dict

# Where the search's bar stands when each stage starts; a stage fills the span up to the next one.
STAGES = {"uniform settings": 0.0, "sensitivity": 0.45, "mixed-precision candidates": 0.6,
          "layer-skip refinement": 0.8, "done": 1.0}
POLL_SECONDS = 0.5


def stage_progress(on_progress: Callable[[float, str], None], name: str) -> Callable[[float, str], None]:
    """A callback filling the span of stage `name` (STAGES) of the search's bar."""
    names = list(STAGES)
    start, end = STAGES[name], STAGES[names[names.index(name) + 1]]
    return lambda f, m: on_progress(start + (end - start) * min(max(f, 0.0), 1.0), m)


def wait_for_jobs(*, executor: Any, job_ids: Sequence[int], on_progress: Callable[[float, str], None], stage: str,
                  timeout: float) -> list:
    """Poll the queue until every job of `job_ids` has finished (or `timeout` s passed), reporting how many did;
    local workers are restarted meanwhile if they stopped. Returns the jobs as they are then."""
    from core.explore.sweeps import keep_workers

    deadline = time.monotonic() + timeout
    while True:
        keep_workers(executor)
        jobs = [executor.queue.get(job_id=i) for i in job_ids]
        finished = sum(job.finished for job in jobs)
        running = [job for job in jobs if job.state == "running"]
        now = f" · now: {running[0].label.split(' · ', 1)[-1]} ({running[0].progress:.0%})" if running else ""
        on_progress(finished / max(1, len(jobs)), f"{stage}: {finished}/{len(jobs)} runs finished{now}")
        if finished == len(jobs) or time.monotonic() > deadline:
            return jobs
        time.sleep(POLL_SECONDS)


@dataclass
class _Search:
    """One search while it runs: where it records, what it has run, and how it reports."""

    executor: Any
    model: ModelRef
    data: DataRef
    goal: SearchGoal
    options: dict
    timeout: float
    search_id: int
    book: SearchBook
    store: Any
    report: Callable[[float, str], None]
    ran: list[int] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def judged(self) -> list[dict]:
        """The model's experiments a winner can be chosen among: those with validation numbers (or without
        labels); a config run without them (a manual run, an older search) is run again with them."""
        return [r for r in self.store.list(model=self.model.source_id)
                if has_validation(r) or not r.get("accuracy_meaningful", True)]

    def stage(self, specs: list[dict], name: str, key: str) -> None:
        """Run `specs` as jobs tagged with the search's origin and wait for them (stage `key` of the bar)."""
        if not specs:
            return
        origin = self.book.get(search_id=self.search_id).origin
        current = self.store.list(model=self.model.source_id)
        job_ids = []
        for spec in specs:
            job_id = self.executor.submit(
                model=self.model, data=self.data, spec=spec, options=self.options,
                origin={**origin, "parent_experiment_id": parent_of(spec, current)},
                label=f"search #{self.search_id} · {spec_from_dict(spec).summary()}")
            self.book.add_jobs(search_id=self.search_id, job_ids=[job_id])
            job_ids.append(job_id)
        jobs = wait_for_jobs(executor=self.executor, job_ids=job_ids, stage=name, timeout=self.timeout,
                             on_progress=stage_progress(self.report, key))
        self.ran += [int(job.experiment_id) for job in jobs if job.experiment_id is not None]
        self.failed += [f"{spec_from_dict(job.spec).summary()}: {job.error or job.state}" for job in jobs
                        if job.experiment_id is None]

    def mixed_precision(self) -> None:
        """The sensitivity table (a sensitivity job: from the cache, or computed now) and the mixed-precision
        candidates built from it."""
        self.report(STAGES["sensitivity"], "Sensitivity: reading the cache or probing each layer")
        sensitivity, note = ensure_sensitivity(executor=self.executor, model=self.model, data=self.data,
                                               on_progress=stage_progress(self.report, "sensitivity"),
                                               timeout=self.timeout)
        if sensitivity is not None:
            mixed, note = mixed_precision_specs(sensitivity=sensitivity, goal=self.goal)
            self.stage(missing_configs(configs=mixed, records=self.judged()), "mixed-precision candidates",
                       "mixed-precision candidates")
        if note:
            self.notes.append(note)

    def refinements(self) -> None:
        for round_number in range(1, (REFINE_ROUNDS if self.goal.refine else 0) + 1):
            records = self.store.list(model=self.model.source_id)
            found = missing_configs(configs=refinement_specs(records, goal=self.goal), records=self.judged())
            if not found:
                return
            self.stage(found, f"layer-skip refinement, round {round_number}", "layer-skip refinement")

    def record_end(self, *, state: str, message: str, **fields: Any) -> None:
        self.book.update(search_id=self.search_id, state=state, finished_at=time.time(), updated_at=time.time(),
                         ran=self.ran, failed=self.failed, notes=self.notes, message=message, **fields)


def ensure_sensitivity(*, executor: Any, model: ModelRef, data: DataRef, on_progress: Callable[[float, str], None],
                       timeout: float) -> tuple[Any, str | None]:
    """The model's sensitivity table on this data with the default probe settings, from a sensitivity job (which
    reads the cache, or computes and caches it). Returns (SensitivityResult or None, a note when there is none)."""
    from core.explore.sensitivity import SensitivityConfig
    from core.explore.sensitivity_job import sensitivity_of, submit_sensitivity
    from core.paths import cache_dir

    job_id = submit_sensitivity(executor=executor, model=model, data=data, config=SensitivityConfig())

    def report(_fraction: float, _message: str) -> None:  # the analysis's own progress, not "0/1 runs finished"
        job = executor.queue.get(job_id=job_id)
        on_progress(job.progress, f"Sensitivity: {job.message}")

    [job] = wait_for_jobs(executor=executor, job_ids=[job_id], stage="sensitivity", timeout=timeout,
                          on_progress=report)
    if job.state != "done":
        return None, f"mixed precision skipped: {job.error or 'the sensitivity analysis was ' + job.state}"
    result = sensitivity_of(job, cache_root=cache_dir(Path(executor.queue.home)))
    return (result, None) if result is not None else (None, "mixed precision skipped: the sensitivity table is gone")


def run_search(
    *, executor: Any, model: ModelRef, data: DataRef, goal: SearchGoal, options: dict | None = None,
    configs: Sequence[dict] | None = None, timeout: float = 3600.0,
    on_progress: Callable[[float, str], None] | None = None, search_id: int | None = None,
    mixed_precision: bool = True,
) -> SearchResult:
    """Run what the answer needs, then answer: the grid configs the model lacks; the sensitivity table (a job) and
    the mixed-precision candidates built from it (objective size); layer-skip refinements. Every run is a job
    tagged ``origin = search #N``.

    The search is recorded in the ``SearchBook`` (a new row, or row `search_id` when it was submitted as a job)
    with its runs and, at the end, its winner. A cancel (``Cancelled`` from `on_progress`, or Ctrl-C) cancels its
    unfinished runs and raises ``SearchCancelled``.
    """
    from core.explore.sweeps import SELECTION_IMAGES, preset_grid
    from core.store import ExperimentStore

    book = SearchBook(home=executor.queue.home)
    options = {"validation_images": SELECTION_IMAGES, **(options or {})}
    configs = list(configs) if configs is not None else list(preset_grid(name="weight-only exploration").configs)
    if search_id is None:
        search_id = book.create(model=model, data=data, goal=goal, options=options, configs=configs, state="running")
    book.update(search_id=search_id, state="running", updated_at=time.time())
    search = _Search(executor=executor, model=model, data=data, goal=goal, options=options, timeout=timeout,
                     search_id=search_id, book=book, store=ExperimentStore(executor.queue.home),
                     report=on_progress or (lambda _f, _m: None))
    try:
        result = _stages(search, configs=configs, mixed_precision=mixed_precision)
    except (Cancelled, KeyboardInterrupt):  # a cancel of its job, or Ctrl-C of the CLI: its runs stop too
        book.cancel_jobs(search_id=search_id)
        search.record_end(state="cancelled",
                          message=f"Cancelled after {len(search.ran)} run(s); unfinished runs were cancelled")
        raise SearchCancelled(f"search #{search_id} cancelled") from None
    except Exception as exc:
        search.record_end(state="failed", message="Failed", error=one_line(exc))
        raise
    result = replace(result, search_id=search_id, notes=tuple(search.notes))
    search.record_end(state="done", message=f"Done: {len(search.ran)} new experiment(s)", sentence=result.sentence,
                      winner_id=None if result.winner is None else int(result.winner["id"]))
    search.report(1.0, "done")
    return result


def _stages(search: _Search, *, configs: Sequence[dict], mixed_precision: bool) -> SearchResult:
    search.report(0.0, "Looking for the uniform settings this model has no result for")
    search.stage(missing_configs(configs=configs, records=search.judged()), "uniform settings", "uniform settings")
    if search.goal.objective == "size" and mixed_precision:
        search.mixed_precision()
    elif search.goal.objective == "latency":
        search.notes.append("mixed precision not run: palettized / low-bit weights are decompressed at run time, so "
                            "recipes trade bytes for accuracy, not speed")
    search.refinements()
    return pick_winner(search.store.list(model=search.model.source_id), goal=search.goal, ran=search.ran,
                       failed=search.failed)


def one_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return (text if isinstance(exc, ValueError) and text else f"{type(exc).__name__}: {text}")[:300]
