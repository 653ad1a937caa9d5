"""The sensitivity analysis is a job like every other: a real worker process computes it, the queue carries its
progress and its cancel, and nothing but the table in the cache is written (no status or flag files)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from core.explore.sensitivity import SensitivityConfig, load_cached, sensitivity_root
from core.explore.sensitivity_job import SENSITIVITY_JOB, sensitivity_of, submit_sensitivity
from core.jobs import CANCELLED, DONE, RUNNING, DataRef, JobQueue, LocalExecutor, ModelRef
from core.paths import cache_dir
from core.store import ExperimentStore

CNN = ModelRef(kind="sample", name="fashion_cnn")
BUNDLED = DataRef(kind="bundled")
SIDE_CHANNEL_FILES = {"status.json", "cancel", "job.json", "worker.log"}  # what the old subprocess protocol wrote


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.rglob("*")} if folder.exists() else set()


def test_a_sensitivity_job_runs_in_a_worker_and_its_table_lands_in_the_cache(home: Path) -> None:
    executor = LocalExecutor(home=home, max_workers=1)
    config = SensitivityConfig(settings=("pal2",), eval_limit=100)
    job_id = submit_sensitivity(executor=executor, model=CNN, data=BUNDLED, config=config)
    assert submit_sensitivity(executor=executor, model=CNN, data=BUNDLED, config=config) == job_id  # followed, not twice
    [job] = executor.wait(job_ids=[job_id], timeout=300)
    assert job.state == DONE and job.kind == SENSITIVITY_JOB, job.error
    assert job.worker_pid != os.getpid()  # computed by a worker process, not this one
    result = sensitivity_of(job, cache_root=cache_dir(home))
    assert result is not None and not result.from_cache and set(result.frame["setting"]) == {"pal2"}
    assert load_cached(key=job.result["key"], cache_root=cache_dir(home)) is not None
    assert not SIDE_CHANNEL_FILES & _files(home)  # progress and the result went through the queue only

    again = submit_sensitivity(executor=executor, model=CNN, data=BUNDLED, config=config)
    [cached] = executor.wait(job_ids=[again], timeout=120)
    assert cached.state == DONE and cached.result["from_cache"] and cached.message == "Sensitivity loaded from the cache"


def test_cancelling_a_running_sensitivity_job_stops_it_and_caches_nothing(home: Path) -> None:
    executor = LocalExecutor(home=home, max_workers=1)
    queue = JobQueue(home=home)
    config = SensitivityConfig(settings=("pal2", "pal3", "pal4", "pal6", "pal8", "int4", "int8"), eval_limit=1000)
    job_id = submit_sensitivity(executor=executor, model=CNN, data=BUNDLED, config=config)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        job = queue.get(job_id=job_id)
        if job.state == RUNNING and job.message.startswith(("Compressing", "Evaluating")):
            break
        assert not job.finished, (job.state, job.error)
        time.sleep(0.1)
    else:
        raise AssertionError("the sensitivity job never started probing")
    queue.cancel(job_id=job_id)
    [job] = executor.wait(job_ids=[job_id], timeout=120)
    assert job.state == CANCELLED and job.result is None
    assert job.message == "Cancelled; nothing was saved"
    root = sensitivity_root(cache_dir(home))
    assert not root.exists() or not any(root.iterdir())  # no table, no half-written staging folder
    assert ExperimentStore(home).list() == []
    assert not SIDE_CHANNEL_FILES & _files(home)
    # The worker that ran it is free again: the next job of the queue runs.
    quick = submit_sensitivity(executor=executor, model=CNN, data=BUNDLED,
                               config=SensitivityConfig(settings=("pal8",), eval_limit=100))
    assert executor.wait(job_ids=[quick], timeout=240)[0].state == DONE
