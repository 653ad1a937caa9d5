"""The Ray executor: the same jobs through a real local Ray instance give the same records as local workers."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from core.jobs import DONE, ExecutorError, JobQueue, LocalExecutor, RayExecutor, get_executor
from core.store import ExperimentStore
from tests.jobs.conftest import BUNDLED, CNN, FAST_OPTIONS

CONFIGS = [
    {"method": "palettize", "n_bits": 4},
    {"method": "palettize", "n_bits": 2},
    {"method": "quantize_weights", "dtype": "int8", "weight_threshold": 0},
]
COMPARED = (
    "model", "method", "spec", "eval_images", "accuracy_top1", "accuracy_top5", "baseline_accuracy_top1",
    "per_class_accuracy", "agreement_top1", "flipped", "output_snr_db", "size_bytes", "artifact_kind",
    "theoretical_size_bytes", "bits_per_weight",
)


def test_an_unreachable_cluster_fails_within_seconds_naming_the_address(home: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ExecutorError, match=r"no Ray cluster is reachable at 127\.0\.0\.1:9"):
        get_executor(name="ray", home=home, ray_address="127.0.0.1:9").submit(model=CNN, data=BUNDLED, spec=CONFIGS[0])
    assert time.monotonic() - started < 10
    assert JobQueue(home=home).list() == []  # nothing was queued for a cluster that is not there


@pytest.mark.ray
def test_ray_and_local_executors_write_the_same_records(home: Path, tmp_path: Path) -> None:
    import ray

    options = {**FAST_OPTIONS, "export": True}
    local = LocalExecutor(home=home, max_workers=1)
    local_ids = [local.submit(model=CNN, data=BUNDLED, spec=spec, options=options) for spec in CONFIGS]
    # a ray job queued by an earlier app process that stopped before its task ran: resume() hands it to Ray
    left = JobQueue(home=home).submit(model=CNN, data=BUNDLED, spec=CONFIGS[0], options=FAST_OPTIONS, executor="ray")
    remote = RayExecutor(home=home, num_cpus=2, lock_path=Path(os.environ["COMPRESSION_STUDIO_TIMING_LOCK"]))
    try:
        ray_ids = [remote.submit(model=CNN, data=BUNDLED, spec=spec, options=options) for spec in CONFIGS]
        assert remote.resume() == [left] and remote.resume() == []
        ray_jobs = remote.wait(job_ids=ray_ids, timeout=300)
        [resumed] = remote.wait(job_ids=[left], timeout=120)
    finally:
        ray.shutdown()
    assert resumed.state == DONE, resumed.error
    local_jobs = local.queue.wait(job_ids=local_ids, timeout=300)
    assert [j.state for j in local_jobs + ray_jobs] == [DONE] * 6, [j.error for j in local_jobs + ray_jobs]
    assert {j.executor for j in ray_jobs} == {"ray"}
    store = ExperimentStore(home)
    for local_job, ray_job in zip(local_jobs, ray_jobs, strict=True):
        a, b = store.get(local_job.experiment_id), store.get(ray_job.experiment_id)
        # output SNR is a float sum over logits: threads in another process may add in another order (1e-9 apart)
        assert {k: a[k] for k in COMPARED if k != "output_snr_db"} == {k: b[k] for k in COMPARED if k != "output_snr_db"}
        assert a["output_snr_db"] == pytest.approx(b["output_snr_db"], rel=1e-6)
        assert Path(b["artifact_path"]).exists() and b["job_id"] == ray_job.id


def test_a_sensitivity_job_runs_as_a_ray_task_through_the_same_queue(home: Path) -> None:
    """Job kinds are found by the Ray task as by a local worker: a feature's kind runs there unchanged."""
    import ray

    from core.explore.sensitivity import SensitivityConfig, load_cached
    from core.explore.sensitivity_job import SENSITIVITY_JOB, submit_sensitivity
    from core.paths import cache_dir

    remote = RayExecutor(home=home, num_cpus=2, lock_path=Path(os.environ["COMPRESSION_STUDIO_TIMING_LOCK"]))
    try:
        job_id = submit_sensitivity(executor=remote, model=CNN, data=BUNDLED,
                                    config=SensitivityConfig(settings=("pal2",), eval_limit=100))
        [job] = remote.wait(job_ids=[job_id], timeout=300)
    finally:
        ray.shutdown()
    assert job.state == DONE and job.kind == SENSITIVITY_JOB and job.executor == "ray", job.error
    assert job.worker_pid != os.getpid()
    assert load_cached(key=job.result["key"], cache_root=cache_dir(home)) is not None
