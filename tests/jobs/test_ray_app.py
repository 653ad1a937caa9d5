"""The app on the Ray executor: a run started on the Compress page goes through a real local Ray instance
(``COMPRESSION_STUDIO_EXECUTOR=ray``, ``ray.init(num_cpus=2)`` started by the app's own executor) and its record
lands in the store, as with local workers."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import pytest

from core.jobs import DONE, JobQueue
from core.store import ExperimentStore

APP = str(Path(__file__).resolve().parents[2] / "app.py")

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(
        importlib.util.find_spec("ray") is None,
        reason="Ray is not installed (pip install 'ray[default]' to run the Ray executor tests)",
    ),
]


def test_a_compress_page_run_goes_through_ray_into_the_store(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray
    from streamlit.testing.v1 import AppTest

    if ray.is_initialized():  # another test's instance: the app must start (and configure) its own
        ray.shutdown()
    monkeypatch.setenv("COMPRESSION_STUDIO_EXECUTOR", "ray")
    monkeypatch.delenv("COMPRESSION_STUDIO_RAY_ADDRESS", raising=False)
    monkeypatch.setenv("COMPRESSION_STUDIO_RAY_CPUS", "2")
    monkeypatch.setenv("COMPRESSION_STUDIO_DEFAULT_MODEL", "sample:fashion_cnn")
    monkeypatch.setenv("COMPRESSION_STUDIO_OFFLINE", "1")
    try:
        at = AppTest.from_file(APP, default_timeout=240)
        at.run()
        at.switch_page("pages/2_Compress.py").run()
        at.selectbox(key="cfg.eval_limit").select(500).run()
        at.radio(key="cfg.torch.kind").set_value("dynamic").run()
        at.button(key="run.torch_dynamic").click().run()
        assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
        assert ray.is_initialized() and ray.cluster_resources().get("CPU") == 2  # the app's own local instance
        [job_id] = at.session_state["jobs.mine"]
        assert JobQueue(home=home).get(job_id=job_id).executor == "ray"
        deadline = time.monotonic() + 600  # Ray's start and the run: minutes on a machine busy with other jobs
        while not at.success:  # the page's polling, as a browser would rerun it
            assert time.monotonic() < deadline, "timed out waiting for the Ray job's result card"
            time.sleep(0.5)
            at.run()
    finally:
        ray.shutdown()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    assert "Saved as experiment **#1** — PyTorch dynamic int8 (Linear layers)" in at.success[0].value
    job = JobQueue(home=home).get(job_id=job_id)
    assert job.state == DONE and job.executor == "ray" and job.worker_pid != os.getpid()  # a Ray worker ran it
    record = ExperimentStore(home).get(job.experiment_id)
    assert record["job_id"] == job_id and record["eval_images"] == 500 and record["method"] == "torch_dynamic"
    assert Path(record["artifact_path"]).is_file() and record["timing_exclusive"] is True
