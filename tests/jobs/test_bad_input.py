"""Bad input through the runner itself (in this process, as a worker runs it): each job fails alone, one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.jobs import DONE, FAILED, JobQueue, ModelRef
from core.jobs.runner import WarmCache, run_claimed_job
from core.jobs.timing_lock import TimingLock
from core.models.sources import load_model
from core.store import ExperimentStore
from tests.jobs.conftest import BUNDLED, CNN, FAST_OPTIONS

PALETTIZE = {"method": "palettize", "n_bits": 4}


def _run_next(queue: JobQueue, cache: WarmCache, lock: TimingLock) -> str:
    job = queue.claim()
    assert job is not None
    return run_claimed_job(queue=queue, job=job, cache=cache, lock=lock)


@pytest.mark.slow
def test_an_upload_deleted_after_a_warm_worker_loaded_it_fails_the_next_job(home: Path) -> None:
    """The warm cache keys a file by mtime/size: a deleted upload is not served from memory."""
    store = ExperimentStore(home)
    upload = store.uploads_dir("session-a") / "0123_fashion_cnn.pt"
    torch.save(load_model("sample:fashion_cnn").module.state_dict(), upload)
    ref = ModelRef(kind="state_dict", name="fashion_cnn", path=str(upload))
    queue, cache, lock = JobQueue(home=home), WarmCache(), TimingLock()
    first = queue.submit(model=ref, data=BUNDLED, spec=PALETTIZE, options=FAST_OPTIONS)
    assert _run_next(queue, cache, lock) == "done"

    second = queue.submit(model=ref, data=BUNDLED, spec=PALETTIZE, options=FAST_OPTIONS)
    bad_options = queue.submit(model=CNN, data=BUNDLED, spec=PALETTIZE, options={"eval_limt": 100})
    unknown_method = queue.submit(model=CNN, data=BUNDLED, spec={"method": "shrink"}, options=FAST_OPTIONS)
    fine = queue.submit(model=CNN, data=BUNDLED, spec=PALETTIZE, options=FAST_OPTIONS)
    upload.unlink()  # the user's upload folder was cleaned while the job waited
    assert [_run_next(queue, cache, lock) for _ in range(4)] == ["failed", "failed", "failed", "done"]

    gone = queue.get(job_id=second)
    assert gone.state == FAILED and gone.error == (
        f"model file {upload.name} is gone ({upload}); upload it again and resubmit.")
    assert "unknown experiment option(s) eval_limt" in queue.get(job_id=bad_options).error
    assert queue.get(job_id=unknown_method).error.startswith("unknown method 'shrink'")
    assert all("\n" not in queue.get(job_id=i).error for i in (second, bad_options, unknown_method))
    done = [queue.get(job_id=i) for i in (first, fine)]
    assert [j.state for j in done] == [DONE, DONE]
    assert sorted(r["id"] for r in store.list()) == sorted(j.experiment_id for j in done)  # nothing else saved
    assert list(queue.staging_root.iterdir()) == []
