"""The per-layer sensitivity analysis as a job kind: it runs in a worker (local or Ray) like every experiment,
with the queue's progress, cancel and heartbeat; its table lands in the data folder's sensitivity cache and the
job's ``result`` names its cache key.

Import-light (torch is imported when a job runs): a page or the budget search imports it to submit and read jobs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.jobs.kinds import JobContext, JobKind, JobOutcome
from core.jobs.refs import DataRef, ModelRef

if TYPE_CHECKING:
    from core.explore.sensitivity import SensitivityConfig, SensitivityResult
    from core.jobs.queue import Job

SENSITIVITY_JOB = "sensitivity"


class SensitivityKind(JobKind):
    """Every weight layer × setting probed alone (``core.explore.sensitivity.run_sensitivity``), under the compute
    lock (nothing is timed; a timing job elsewhere waits). A cancel stops it before anything is cached."""

    kind = SENSITIVITY_JOB

    def run(self, context: JobContext) -> JobOutcome:
        from core.explore.sensitivity import SensitivityConfig, run_sensitivity
        from core.paths import cache_dir

        job, progress = context.job, context.progress
        config = SensitivityConfig.from_dict(job.options.get("config") or {})
        cache_root = Path(job.options["cache_root"]) if job.options.get("cache_root") else cache_dir(context.home)
        with context.lock.compute():
            progress.update(0.0, "Loading the model and data")
            model = context.cache.model(ref=job.model_ref)
            dataset = context.cache.dataset(ref=job.data_ref, model=model)
            result = run_sensitivity(model=model, dataset=dataset, config=config, progress=progress.sub(0.02, 1.0),
                                     cache_root=cache_root, use_cache=bool(job.options.get("use_cache", True)))
        meta = result.meta
        message = ("Sensitivity loaded from the cache" if result.from_cache
                   else f"Sensitivity computed in {meta.get('seconds', 0):.0f} s")
        return JobOutcome(result={"key": meta["key"], "from_cache": bool(result.from_cache)}, message=message)


def sensitivity_options(*, config: SensitivityConfig, cache_root: Path | None = None, use_cache: bool = True) -> dict:
    """The job options of one analysis (what ``find_active`` compares to follow a running one)."""
    options: dict[str, Any] = {"config": config.to_dict(), "use_cache": bool(use_cache)}
    if cache_root is not None:
        options["cache_root"] = str(cache_root)
    return options


def submit_sensitivity(*, executor: Any, model: ModelRef, data: DataRef, config: SensitivityConfig,
                       cache_root: Path | None = None, use_cache: bool = True, origin: dict | None = None) -> int:
    """Queue the analysis of `model` on `data`; returns the job id. The same analysis already queued or running
    (another tab, a reload) is followed instead of started twice."""
    options = sensitivity_options(config=config, cache_root=cache_root, use_cache=use_cache)
    running = executor.queue.find_active(kind=SENSITIVITY_JOB, model=model, data=data, spec={}, options=options)
    if running is not None:
        return running.id
    return int(executor.submit(model=model, data=data, spec={}, options=options, kind=SENSITIVITY_JOB,
                               label=f"Sensitivity · {model.name or model.kind}", origin=origin))


def sensitivity_of(job: Job, *, cache_root: Path | None = None) -> SensitivityResult | None:
    """The table a finished sensitivity job computed (read back from the cache; None when not done)."""
    from core.explore.sensitivity import load_cached

    if job.kind != SENSITIVITY_JOB or job.state != "done" or not job.result:
        return None
    root = Path(job.options["cache_root"]) if job.options.get("cache_root") else cache_root
    result = load_cached(key=str(job.result["key"]), cache_root=root)
    if result is not None:
        result.from_cache = bool(job.result.get("from_cache"))
    return result
