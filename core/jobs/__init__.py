"""Experiments as jobs: a queue in the store's SQLite file, worker processes (or Ray tasks) that run them.

Submit with references (never loaded objects), watch the job row, cancel from any process::

    from core.jobs import DataRef, ModelRef, get_executor
    executor = get_executor()                      # local workers, or $COMPRESSION_STUDIO_EXECUTOR=ray
    job_id = executor.submit(model=ModelRef(kind="sample", name="fashion_cnn"), data=DataRef(kind="bundled"),
                             spec={"method": "palettize", "n_bits": 4}, options={"eval_limit": 500})
    executor.queue.wait(job_ids=[job_id])          # or poll executor.queue.get(job_id=job_id)
"""

from core.jobs.executors import (
    EXECUTOR_ENV,
    RAY_ADDRESS_ENV,
    WORKERS_ENV,
    ExecutorError,
    LocalExecutor,
    RayExecutor,
    default_worker_count,
    ensure_workers,
    executor_name,
    get_executor,
)
from core.jobs.kinds import JobContext, JobKind, JobOutcome, KindError, find_kind, registered_kinds
from core.jobs.queue import (
    BASELINE_JOB,
    CANCELLED,
    DONE,
    EXPERIMENT_JOB,
    FAILED,
    MLPACKAGE_JOB,
    QUEUED,
    RECIPE_SEARCH_JOB,
    RUNNING,
    Job,
    JobError,
    JobQueue,
)
from core.jobs.refs import DataRef, ModelRef, RefError, options_from_dict, options_to_dict
from core.jobs.timing_lock import TimingLock

__all__ = [
    "BASELINE_JOB",
    "CANCELLED",
    "DONE",
    "EXECUTOR_ENV",
    "EXPERIMENT_JOB",
    "FAILED",
    "MLPACKAGE_JOB",
    "QUEUED",
    "RAY_ADDRESS_ENV",
    "RECIPE_SEARCH_JOB",
    "RUNNING",
    "WORKERS_ENV",
    "DataRef",
    "ExecutorError",
    "Job",
    "JobContext",
    "JobError",
    "JobKind",
    "JobOutcome",
    "JobQueue",
    "KindError",
    "LocalExecutor",
    "ModelRef",
    "RayExecutor",
    "RefError",
    "TimingLock",
    "default_worker_count",
    "ensure_workers",
    "executor_name",
    "find_kind",
    "get_executor",
    "options_from_dict",
    "options_to_dict",
    "registered_kinds",
]
