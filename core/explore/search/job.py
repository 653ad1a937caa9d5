"""The budget search as job kind ``budget_search``: the dashboard submits it, a worker runs ``run_search``, and the
search's progress, cancel and heartbeat are its job row's, like every other job. Its runs are jobs of their own
(the search waits for them), so it asks for one worker more than the default per search running: a search never
waits on a queue that only its own worker could serve.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.explore.search.book import SearchBook, SearchRun
from core.explore.search.goal import SearchGoal
from core.jobs.kinds import JobContext, JobKind, JobOutcome
from core.jobs.refs import DataRef, ModelRef

BUDGET_SEARCH_JOB = "budget_search"


class BudgetSearchKind(JobKind):
    """Runs search `options["search_id"]` of the book to its end; the winner goes to the book and the result."""

    kind = BUDGET_SEARCH_JOB
    waits_for_jobs = True

    def run(self, context: JobContext) -> JobOutcome:
        from core.explore.search.runner import run_search

        run = SearchBook(home=context.home).get(search_id=int(context.job.options["search_id"]))
        result = run_search(executor=_executor_for_runs(context), model=run.model_ref, data=run.data_ref,
                            goal=run.goal, options=run.options, configs=run.configs or None, search_id=run.id,
                            on_progress=context.progress.update,
                            mixed_precision=bool(context.job.options.get("mixed_precision", True)))
        winner = None if result.winner is None else int(result.winner["id"])
        return JobOutcome(result={"search_id": run.id, "winner_id": winner, "ran": list(result.ran_experiments)},
                          message=f"Done: {len(result.ran_experiments)} new experiment(s)")


def _executor_for_runs(context: JobContext) -> Any:
    """Where the search's runs go: the executor its own job ran on; locally with one worker more than the default
    for each search running now, since their workers wait for runs instead of running them."""
    from core.jobs.executors import default_worker_count, get_executor

    waiting = sum(1 for job in context.queue.list(states=["running"]) if job.kind == BUDGET_SEARCH_JOB)
    return get_executor(name=context.job.executor, home=context.home,
                        max_workers=default_worker_count() + max(1, waiting))


def submit_search(
    *, executor: Any, model: ModelRef, data: DataRef, goal: SearchGoal, options: dict | None = None,
    configs: Sequence[dict] | None = None, mixed_precision: bool = True,
) -> int:
    """Record a search and queue it as a job; returns the search id. Any page, reload or session follows it
    through ``SearchBook.get`` (its job's progress) and cancels it with ``SearchBook.request_cancel``."""
    book = SearchBook(home=executor.queue.home)
    search_id = book.create(model=model, data=data, goal=goal, options=dict(options or {}),
                            configs=list(configs) if configs is not None else None)
    run = book.get(search_id=search_id)
    job_id = executor.submit(model=model, data=data, spec={}, kind=BUDGET_SEARCH_JOB,
                             options={"search_id": search_id, "mixed_precision": bool(mixed_precision)},
                             label=run.origin["label"])
    book.update(search_id=search_id, job_id=job_id)
    return search_id


def wait_for_search(*, search_id: int, home: Path | str | None = None, timeout: float = 3600.0,
                    poll: float = 0.5) -> SearchRun:
    """Block until search `search_id` has finished (or `timeout` s passed); returns its row then."""
    from core.jobs.executors import ensure_workers

    book = SearchBook(home=home)
    deadline = time.monotonic() + timeout
    while True:
        run = book.get(search_id=search_id)
        if run.finished or time.monotonic() > deadline:
            return run
        ensure_workers(home=book.home)  # a worker that idled out or died is replaced, as a page's poll does
        time.sleep(poll)
