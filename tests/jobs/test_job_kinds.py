"""Job kinds besides experiments: a model's baseline and the Core ML-side compression of an uploaded .mlpackage.

Both run in a worker process like every experiment (same queue, progress, cancel); the baseline's record lands in
the data folder's baseline cache, where any process (the Model page) reads it without measuring anything.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from core.jobs import (
    BASELINE_JOB,
    DONE,
    FAILED,
    MLPACKAGE_JOB,
    DataRef,
    JobError,
    JobQueue,
    LocalExecutor,
    ModelRef,
)
from core.jobs.baselines import cached_baseline, resolve_options
from core.jobs.refs import load_data_ref, load_model_ref
from core.jobs.runner import run_claimed_job
from core.jobs.timing_lock import TimingLock
from core.store import ExperimentStore
from tests.jobs.conftest import BUNDLED, CNN

FAST_LATENCY = {
    "threads": 1,
    "batch_sizes": [1],
    "warmup": 1,
    "min_repeats": 3,
    "max_repeats": 3,
    "seconds_per_batch_size": 0.05,
}
BASELINE_OPTIONS = {"eval_limit": 100, "export": False, "measure_memory": False, "latency": FAST_LATENCY}


def _package(tmp_path: Path) -> Path:
    from core.export import export_coreml_baseline
    from core.models.sources import load_model

    return export_coreml_baseline(model=load_model("sample:fashion_cnn"), path=tmp_path / "cnn.mlpackage")


@pytest.mark.slow
def test_baseline_and_mlpackage_jobs_run_in_a_worker_process(home: Path, tmp_path: Path) -> None:
    package = _package(tmp_path)
    executor = LocalExecutor(home=home, max_workers=1)
    baseline_id = executor.submit(
        model=CNN, data=BUNDLED, spec={}, options=BASELINE_OPTIONS, label="Baseline", kind=BASELINE_JOB
    )
    package_id = executor.submit(
        model=ModelRef(kind="mlpackage", name="cnn", path=str(package)),
        data=DataRef(kind="none"),
        spec={"method": "palettize", "n_bits": 4},
        kind=MLPACKAGE_JOB,
    )
    baseline_job, package_job = executor.wait(job_ids=[baseline_id, package_id], timeout=300)
    assert (baseline_job.state, package_job.state) == (DONE, DONE), (baseline_job.error, package_job.error)
    assert {baseline_job.kind, package_job.kind} == {BASELINE_JOB, MLPACKAGE_JOB}
    assert baseline_job.worker_pid != os.getpid() and package_job.worker_pid != os.getpid()

    # The baseline: no experiment; its record is the job's result and sits in the data folder's cache.
    assert baseline_job.experiment_id is None and baseline_job.message == "Baseline measured"
    record = baseline_job.result["record"]
    assert record["eval_images"] == 100 and 0.5 < record["accuracy_top1"] <= 1.0
    assert record["latency_ms_p50"] > 0 and record["timing_exclusive"] is True
    model = load_model_ref(ref=CNN)
    options = resolve_options(options=BASELINE_OPTIONS, input_shape=model.input_shape, cache_dir=None)
    cached = cached_baseline(model=model, dataset=load_data_ref(ref=BUNDLED, model=model), options=options)
    assert cached == record  # what the Model page reads: the worker's measurement, found by this process
    other = resolve_options(
        options={**BASELINE_OPTIONS, "eval_limit": 50}, input_shape=model.input_shape, cache_dir=None
    )
    assert cached_baseline(model=model, dataset=load_data_ref(ref=BUNDLED, model=model), options=other) is None

    # The package: an experiment saved by the worker, with the job's id.
    saved = ExperimentStore(home).get(package_job.experiment_id)
    assert saved["model"] == "mlpackage:cnn" and saved["artifact_kind"] == "mlpackage"
    assert saved["job_id"] == package_job.id and saved["compression_ratio_fp16"] > 3.3
    assert Path(saved["artifact_path"]).is_dir()


def test_a_package_that_is_gone_fails_its_job_with_one_line(home: Path, tmp_path: Path) -> None:
    queue = JobQueue(home=home)
    gone = tmp_path / "deleted.mlpackage"
    job_id = queue.submit(
        model=ModelRef(kind="mlpackage", name="deleted", path=str(gone)),
        data=DataRef(kind="none"),
        spec={"method": "palettize", "n_bits": 4},
        kind=MLPACKAGE_JOB,
    )
    state = run_claimed_job(queue=queue, job=queue.claim(job_id=job_id), lock=TimingLock(path=tmp_path / "lock"))
    job = queue.get(job_id=job_id)
    assert state == FAILED == job.state
    assert job.error == f"Core ML package deleted.mlpackage is gone ({gone}); upload it again and resubmit."
    assert ExperimentStore(home).count() == 0 and list(queue.staging_root.iterdir()) == []


def test_unknown_kinds_are_refused_and_active_jobs_are_found(home: Path) -> None:
    queue = JobQueue(home=home)
    with pytest.raises(JobError, match=r"job kind must be one of .*baseline.*experiment.*mlpackage"):
        queue.submit(model=CNN, data=BUNDLED, spec={}, kind="sweep-of-everything")
    first = queue.submit(model=CNN, data=BUNDLED, spec={}, options={"eval_limit": 100}, kind=BASELINE_JOB)
    queue.submit(model=CNN, data=BUNDLED, spec={"method": "palettize"}, options={"eval_limit": 100})
    found = queue.find_active(kind=BASELINE_JOB, model=CNN, data=BUNDLED, options={"eval_limit": 100})
    assert found is not None and found.id == first
    assert queue.find_active(kind=BASELINE_JOB, model=CNN, data=BUNDLED, options={"eval_limit": 500}) is None
    queue.cancel(job_id=first)
    assert queue.find_active(kind=BASELINE_JOB, model=CNN, data=BUNDLED, options={"eval_limit": 100}) is None


def test_a_queue_made_before_job_kinds_gets_the_new_columns(home: Path) -> None:
    home.mkdir(parents=True)
    conn = sqlite3.connect(home / "experiments.sqlite")
    conn.execute(  # the jobs table as the first release wrote it
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, state TEXT NOT NULL, executor TEXT NOT NULL"
        " DEFAULT 'local', label TEXT NOT NULL DEFAULT '', model_ref TEXT NOT NULL, data_ref TEXT NOT NULL,"
        " spec TEXT NOT NULL, options TEXT NOT NULL, progress REAL NOT NULL DEFAULT 0, message TEXT NOT NULL"
        " DEFAULT '', created_at REAL NOT NULL, started_at REAL, finished_at REAL, heartbeat_at REAL, worker_pid"
        " INTEGER, worker_host TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0, error TEXT, experiment_id INTEGER,"
        " phase_seconds TEXT)"
    )
    conn.execute(
        "INSERT INTO jobs (state, model_ref, data_ref, spec, options, created_at) VALUES (?,?,?,?,?,?)",
        ("queued", json.dumps(CNN.to_dict()), json.dumps(BUNDLED.to_dict()), "{}", "{}", 1.0),
    )
    conn.commit()
    conn.close()
    [old] = JobQueue(home=home).list()
    assert old.kind == "experiment" and old.result is None
