"""The job table: submit / claim / cancel / finish, atomic claims across processes, reaping dead workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.jobs.queue import CANCELLED, DONE, FAILED, QUEUED, RUNNING, JobError, JobQueue
from core.paths import PROJECT_ROOT
from tests.jobs.conftest import BUNDLED, CNN, FAST_OPTIONS

SPEC = {"method": "palettize", "n_bits": 4}


def test_a_submitted_job_is_seen_by_another_queue_object_on_the_same_folder(home: Path) -> None:
    job_id = JobQueue(home=home).submit(model=CNN, data=BUNDLED, spec=SPEC, options=FAST_OPTIONS, label="cnn 4 bit")
    job = JobQueue(home=home).get(job_id=job_id)
    assert (job.state, job.model_ref, job.data_ref, job.spec, job.options) == (QUEUED, CNN, BUNDLED, SPEC, FAST_OPTIONS)
    assert job.created_at <= time.time() and job.started_at is None and job.label == "cnn 4 bit"


def test_claim_run_finish_and_cancel_paths(home: Path) -> None:
    queue = JobQueue(home=home)
    first, second, third = (queue.submit(model=CNN, data=BUNDLED, spec=SPEC) for _ in range(3))
    assert queue.cancel(job_id=third) == CANCELLED  # queued: cancelled at once, never claimed
    claimed = queue.claim()
    assert claimed.id == first and claimed.state == RUNNING and claimed.worker_pid == os.getpid()
    assert queue.report_progress(job_id=first, fraction=0.4, message="Compressing") is False
    assert queue.cancel(job_id=first) == RUNNING  # running: a request the worker sees at its next update
    assert queue.report_progress(job_id=first, fraction=0.5, message="Exporting") is True
    queue.mark_cancelled(job_id=first)
    assert queue.claim().id == second
    queue.finish(job_id=second, experiment_id=7, phase_seconds={"compress": 1.5})
    assert queue.claim() is None
    states = {job.id: (job.state, job.experiment_id) for job in queue.list()}
    assert states == {first: (CANCELLED, None), second: (DONE, 7), third: (CANCELLED, None)}
    assert queue.get(job_id=second).phase_seconds == {"compress": 1.5}
    with pytest.raises(JobError, match="#999 does not exist"):
        queue.cancel(job_id=999)


_CLAIMER = """
import json, sys
from core.jobs.queue import JobQueue
queue = JobQueue(home=sys.argv[1])
got = []
while (job := queue.claim()) is not None:
    got.append(job.id)
print(json.dumps(got))
"""


def test_three_processes_claiming_at_once_never_share_a_job(home: Path) -> None:
    queue = JobQueue(home=home)
    ids = [queue.submit(model=CNN, data=BUNDLED, spec=SPEC) for _ in range(30)]
    procs = [
        subprocess.Popen([sys.executable, "-c", _CLAIMER, str(home)], cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                         text=True)
        for _ in range(3)
    ]
    claimed = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    flat = [i for got in claimed for i in got]
    assert sorted(flat) == ids  # every job claimed exactly once
    assert {job.worker_pid for job in queue.list()} == {p.pid for p, got in zip(procs, claimed, strict=True) if got}


def test_a_job_whose_worker_died_is_failed_and_its_staging_folder_removed(home: Path) -> None:
    queue = JobQueue(home=home)
    job_id = queue.submit(model=CNN, data=BUNDLED, spec=SPEC)
    doomed = subprocess.Popen(["sleep", "60"])
    queue.claim(pid=doomed.pid)
    staging = queue.staging_root / f"{queue.staging_prefix(job_id=job_id)}abc"
    (staging / "model.mlpackage").mkdir(parents=True)
    assert queue.reap() == []  # alive: left alone
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    job = queue.get(job_id=job_id)  # any reader reaps
    assert job.state == FAILED and job.error.startswith("worker stopped:") and str(doomed.pid) in job.error
    assert not staging.exists()


def test_a_job_without_heartbeat_is_failed_as_orphaned(home: Path) -> None:
    queue = JobQueue(home=home, stale_after=0.5)
    job_id = queue.submit(model=CNN, data=BUNDLED, spec=SPEC)
    queue.claim()  # this very process: alive, but it never beats
    time.sleep(0.8)
    job = queue.get(job_id=job_id)
    assert job.state == FAILED and "no heartbeat" in job.error


def test_bad_submissions_are_refused_with_the_reason(home: Path) -> None:
    queue = JobQueue(home=home)
    with pytest.raises(JobError, match="executor must be one of"):
        queue.submit(model=CNN, data=BUNDLED, spec=SPEC, executor="slurm")
    with pytest.raises(JobError, match="ModelRef"):
        queue.submit(model="sample:fashion_cnn", data=BUNDLED, spec=SPEC)  # type: ignore[arg-type]
    with pytest.raises(JobError, match="JSON"):
        queue.submit(model=CNN, data=BUNDLED, spec={"n_bits": float("nan")})


def test_the_queue_lives_in_the_store_file_and_stages_in_the_store_staging_folder(home: Path) -> None:
    from core.store import ExperimentStore

    queue, store = JobQueue(home=home), ExperimentStore(home)
    assert (queue.db_path, queue.staging_root) == (store.db_path, store.staging_root)
    queue.submit(model=CNN, data=BUNDLED, spec=SPEC)
    assert store.count() == 0 and ExperimentStore(home).count() == 0  # the store's table is untouched
