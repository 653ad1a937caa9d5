"""Real worker processes on a real store: jobs run, bad ones fail with one line, cancel and SIGKILL leave nothing."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from core.jobs import CANCELLED, DONE, FAILED, RUNNING, DataRef, JobQueue, ModelRef, ensure_workers
from core.store import ExperimentStore
from tests.jobs.conftest import BUNDLED, CNN, FAST_OPTIONS, wait_until

PALETTIZE = {"method": "palettize", "n_bits": 4}


def _staging_left(queue: JobQueue) -> list[str]:
    return sorted(p.name for p in queue.staging_root.iterdir()) if queue.staging_root.exists() else []


@pytest.mark.slow
def test_a_worker_runs_the_queue_and_each_bad_job_fails_alone_with_one_line(home: Path, tmp_path: Path) -> None:
    queue = JobQueue(home=home)
    orphan = queue.submit(model=CNN, data=BUNDLED, spec=PALETTIZE, options=FAST_OPTIONS)
    gone_pid = _dead_pid()
    queue.claim(pid=gone_pid)  # "running" on a process that no longer exists: what a crash or an app restart leaves
    good = queue.submit(model=CNN, data=BUNDLED, spec=PALETTIZE, options=FAST_OPTIONS, label="4-bit")
    bad_spec = queue.submit(model=CNN, data=BUNDLED, spec={"method": "palettize", "n_bits": 5}, options=FAST_OPTIONS)
    upload = tmp_path / "uploads" / "model.pt"
    gone_model = queue.submit(model=ModelRef(kind="torchscript", path=str(upload)), data=BUNDLED, spec=PALETTIZE)
    gone_data = queue.submit(
        model=CNN, spec=PALETTIZE, options=FAST_OPTIONS,
        data=DataRef(kind="folder", path=str(tmp_path / "gone.zip"), image_size=(28, 28), channels=1, mean=(0.5,),
                     std=(0.5,)),
    )
    again = queue.submit(model=CNN, data=BUNDLED, spec={"method": "palettize", "n_bits": 2}, options=FAST_OPTIONS)

    assert len(ensure_workers(home=home, max_workers=1)) == 1
    assert ensure_workers(home=home, max_workers=1) == []  # one is starting: no second one
    jobs = {job.id: job for job in queue.wait(job_ids=[good, bad_spec, gone_model, gone_data, again], timeout=240)}

    assert queue.get(job_id=orphan).state == FAILED and queue.get(job_id=orphan).error.startswith("worker stopped")
    assert jobs[bad_spec].state == FAILED and jobs[bad_spec].error == "n_bits must be one of 1, 2, 3, 4, 6, 8; got 5."
    assert jobs[gone_model].state == FAILED and "model.pt is gone" in jobs[gone_model].error
    assert jobs[gone_data].state == FAILED and "gone.zip is gone" in jobs[gone_data].error
    assert all("\n" not in (job.error or "") for job in jobs.values())
    assert jobs[good].state == DONE and jobs[again].state == DONE
    store = ExperimentStore(home)
    records = {r["id"]: r for r in store.list()}
    assert set(records) == {jobs[good].experiment_id, jobs[again].experiment_id}
    first, second = records[jobs[good].experiment_id], records[jobs[again].experiment_id]
    assert (first["job_id"], first["spec"]["n_bits"], second["spec"]["n_bits"]) == (good, 4, 2)
    assert first["eval_images"] == 100 and first["timing_exclusive"] is None  # latency was not measured
    assert {"load", "compress", "evaluate", "save"} <= set(jobs[good].phase_seconds)
    assert jobs[again].phase_seconds["load"] < 0.5  # the model stayed loaded in the warm worker
    assert any((home / "cache" / "baseline_eval").iterdir())  # baseline logits cached in the job's data folder
    assert _staging_left(queue) == []


@pytest.mark.slow
def test_cancel_from_another_process_stops_the_run_and_saves_nothing(home: Path) -> None:
    queue = JobQueue(home=home)
    slow_latency = {"threads": 1, "batch_sizes": [1], "seconds_per_batch_size": 60, "max_repeats": 1_000_000}
    options = {**FAST_OPTIONS, "measure_latency": True, "latency": slow_latency}
    # int8 kernels: latency is measured in full (a palettization only gets a short confirmation, over too soon)
    job_id = queue.submit(model=CNN, data=BUNDLED, spec={"method": "torch_dynamic"}, options=options)
    ensure_workers(home=home, max_workers=1)
    wait_until(lambda: queue.get(job_id=job_id).message.startswith("Latency"), timeout=120, what="the latency phase")
    assert JobQueue(home=home).cancel(job_id=job_id) == RUNNING
    job = wait_until(lambda: (j := queue.get(job_id=job_id)).finished and j, timeout=10, what="the cancel")
    assert job.state == CANCELLED and job.experiment_id is None
    assert ExperimentStore(home).count() == 0 and _staging_left(queue) == []


@pytest.mark.slow
def test_a_worker_killed_mid_compression_fails_its_job_and_the_next_job_runs(home: Path) -> None:
    queue = JobQueue(home=home)
    kept = queue.submit(model=CNN, data=BUNDLED, spec=PALETTIZE, options={**FAST_OPTIONS, "export": True})
    fine_tune = {"method": "palettize", "n_bits": 4, "workflow": "fine_tune", "max_steps": 400, "train_limit": 2000}
    victim = queue.submit(model=CNN, data=BUNDLED, spec=fine_tune, options={**FAST_OPTIONS, "export": True})
    after = queue.submit(model=CNN, data=BUNDLED, spec=PALETTIZE, options=FAST_OPTIONS)
    ensure_workers(home=home, max_workers=1)

    def compressing():
        job = queue.get(job_id=victim)
        return job if job.state == RUNNING and "step" in job.message else None

    job = wait_until(compressing, timeout=180, what="the fine-tuning steps")
    assert job.progress < 0.5  # mid-compression
    os.kill(job.worker_pid, signal.SIGKILL)
    failed = wait_until(lambda: (j := queue.get(job_id=victim)).finished and j, timeout=5, what="the reaper")
    assert failed.state == FAILED and failed.error == "worker stopped: killed by signal 9 (SIGKILL)"
    assert _staging_left(queue) == []

    ensure_workers(home=home, max_workers=1)  # the app / CLI does this on its next poll
    [done] = queue.wait(job_ids=[after], timeout=180)
    assert done.state == DONE
    store = ExperimentStore(home)
    kept_id = queue.get(job_id=kept).experiment_id
    assert [r["id"] for r in store.list()] == [kept_id, done.experiment_id]
    assert Path(store.get(kept_id)["artifact_path"]).exists()  # the earlier experiment is intact
    assert sorted(p.name for p in store.experiments_root.iterdir()) == [f"{kept_id:06d}", f"{done.experiment_id:06d}"]


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_an_idle_worker_leaves_and_a_surplus_worker_does_not_start(home: Path) -> None:
    from core.jobs.worker import serve

    queue = JobQueue(home=home)
    assert serve(home=home, max_workers=1, idle_timeout=0.2) == 0 and queue.live_workers() == 0  # idled out
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        assert queue.register_worker(max_workers=1, pid=sleeper.pid)  # one live worker serves this folder
        queue.submit(model=CNN, data=BUNDLED, spec=PALETTIZE, options=FAST_OPTIONS)
        assert serve(home=home, max_workers=1, idle_timeout=0.2) == 0  # the limit holds: this one never started
        assert queue.counts()["queued"] == 1
    finally:
        sleeper.kill()
        sleeper.wait()
    assert queue.live_workers() == 0  # a dead worker's registration is pruned
