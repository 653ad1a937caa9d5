"""Compress page: every tab renders, impossible settings explain themselves, and a real run is saved and compared."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from core.jobs import CANCELLED, DONE, FAILED, DataRef, JobQueue, ModelRef
from core.store import ExperimentStore
from pages._ui.spec_form import tab_groups
from tests.pages.conftest import assert_clean


def test_tabs_render_with_their_knobs(app) -> None:
    at = app(page="pages/2_Compress.py")
    assert_clean(at)
    # A tab per method's form (drawn from its spec's knobs), so a method added later adds its tab before the pipeline.
    labels = [t.label for t in at.tabs]
    assert labels[:5] == ["Palettize", "Quantize weights", "Activations W8A8", "Prune", "PyTorch int8"]
    assert labels == [*tab_groups(), "Joint pipeline"]
    assert at.select_slider(key="cfg.palettize.n_bits").value == 4
    assert at.radio(key="cfg.qw.dtype").options == ["int8", "int4"]
    assert at.slider(key="cfg.prune.target_sparsity").value == pytest.approx(0.5)
    run_buttons = [b.key for b in at.button if b.key and b.key.startswith("run.")]
    assert run_buttons[:5] == ["run.palettize", "run.quantize_weights", "run.quantize_activations", "run.prune",
                               "run.torch_static"]
    assert run_buttons == [f"run.{members[0].method}" for members in tab_groups().values()] + ["run.pipeline"]
    assert any("Estimated run time" in c.value for c in at.caption)
    # Every knob has a one-line help text.
    for widget in [*at.slider, *at.select_slider, *at.radio, *at.number_input, *at.toggle, *at.selectbox]:
        assert widget.help, f"{widget.key} has no help text"


def test_w8a8_weight_scales_toggle_reaches_the_spec(app) -> None:
    at = app(page="pages/2_Compress.py")
    toggle = at.toggle(key="cfg.w8a8.weight_per_channel")
    assert toggle.value is True and "Depthwise convs" in toggle.help
    assert any("weight_per_channel: true" in c.value for c in at.code)
    toggle.set_value(False).run()
    assert_clean(at)
    assert any("method: quantize_activations" in c.value and "weight_per_channel: false" in c.value for c in at.code)


def test_impossible_setting_is_explained_not_raised(app) -> None:
    at = app(page="pages/2_Compress.py")
    at.radio(key="cfg.palettize.mode").set_value("uniform").run()
    at.radio(key="cfg.palettize.workflow").set_value("calibration").run()
    assert not at.exception
    assert any("data-free only" in e.value for e in at.error)
    assert "run.palettize" not in [b.key for b in at.button]  # no Run button for an impossible spec


@pytest.mark.slow
def test_run_from_compress_page_appears_in_compare(app) -> None:
    """The Run button queues a job; a worker process runs it; the page polls and shows the result card."""
    at = app(page="pages/2_Compress.py")
    at.selectbox(key="cfg.eval_limit").select(500).run()
    at.radio(key="cfg.torch.kind").set_value("dynamic").run()
    at.button(key="run.torch_dynamic").click().run()
    assert_clean(at)
    [job_id] = at.session_state["jobs.mine"]
    assert JobQueue(home=_home()).get(job_id=job_id).label == "PyTorch dynamic int8 (Linear layers)"
    assert any(b.key == "run.cancel" for b in at.button)  # progress with a Cancel button while it runs
    at = _until(at, lambda: at.success, what="the result card")
    assert_clean(at)
    assert "Saved as experiment **#1** — PyTorch dynamic int8 (Linear layers)" in at.success[0].value
    metrics = {m.label: (m.value, m.delta) for m in at.metric}
    assert metrics["Top-1 accuracy"][0].endswith("%") and "pts vs" in metrics["Top-1 accuracy"][1]
    assert metrics["Size on disk"][1].endswith("× smaller")
    latency = metrics["Latency p50"][1]  # with its interval: a change and its 95 % CI, or "no measurable difference"
    assert latency.startswith(("no measurable difference (±", "same computation (")) or "(95% CI " in latency, latency
    assert metrics["Time to compress"][0].endswith("s")
    downloads = [d.label for d in at.get("download_button")]
    assert downloads[0].startswith("TorchScript model")
    assert downloads[1:] == ["Recipe (coremltools YAML)", "Recipe (Python snippet)"]
    assert "Experiments:** 1" in " ".join(m.value for m in at.sidebar.markdown)
    job = JobQueue(home=_home()).get(job_id=job_id)
    assert job.state == DONE and job.worker_pid != os.getpid()  # computed by a worker process, not the app's
    record = ExperimentStore(_home()).get(1)
    assert record["job_id"] == job_id and record["timing_exclusive"] is True
    base = record["baseline_accuracy_top1"] * 100  # the card names the images its baseline was measured on
    assert any(f"Compared with the baseline {base:.2f} % on 500 Fashion-MNIST test images (" in c.value
               for c in at.caption)

    at.switch_page("pages/3_Compare.py").run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert list(table["#"]) == [1]
    assert table.loc[0, "method"] == "PyTorch dynamic"
    assert table.loc[0, "eval images"] == 500

    at.switch_page("pages/2_Compress.py").run()  # back again: the session still shows its run's result
    assert "Saved as experiment **#1**" in at.success[0].value
    other_tab = app(page="pages/4_Layers.py")  # another session sees the finished job in the sidebar queue
    assert any(f"#{job_id} PyTorch dynamic int8 (Linear layers) — experiment #1" in c.value for c in other_tab.sidebar.caption)
    reloaded = app()  # a reload is a new session: the URL's ?job=N brings the run's result back
    assert at.query_params["job"] == str(job_id)
    reloaded.query_params["job"] = str(job_id)
    reloaded.switch_page("pages/2_Compress.py").run()
    assert "Saved as experiment **#1** — PyTorch dynamic int8 (Linear layers)" in reloaded.success[0].value


@pytest.mark.slow
def test_cancel_button_stops_the_job_and_saves_nothing(app) -> None:
    """Cancel on the page while the worker times latency: the job ends cancelled, no row, no staging files."""
    at = app(page="pages/2_Compress.py")
    store = ExperimentStore(_home())
    before = store.count()
    at.radio(key="cfg.torch.kind").set_value("dynamic").run()  # int8 kernels: latency is timed in full (seconds)
    at.button(key="run.torch_dynamic").click().run()
    [*_, job_id] = at.session_state["jobs.mine"]
    queue = JobQueue(home=_home())
    _wait(lambda: queue.get(job_id=job_id).message.startswith("Latency"), timeout=300, what="the latency phase")
    at.run()
    at.button(key="run.cancel").click().run()
    _wait(lambda: queue.get(job_id=job_id).finished, timeout=60, what="the cancel")
    at.run()
    assert queue.get(job_id=job_id).state == CANCELLED
    assert any("Run cancelled" in w.value for w in at.warning)
    assert store.count() == before
    assert [p.name for p in store.staging_root.iterdir()] == []


def test_a_run_whose_upload_was_deleted_fails_with_its_reason_on_the_page(app) -> None:
    """The session's uploaded weights vanish from the uploads folder before the worker loads them."""
    import torch

    from core.models.sources import load_model

    at = app()
    upload = ExperimentStore(_home()).uploads_dir(at.session_state["session_id"]) / "0123_cnn_weights.pt"
    torch.save(load_model("sample:fashion_cnn").module.state_dict(), upload)
    at.session_state["model_choice"] = {"source_id": f"state_dict:fashion_cnn:{upload}", "hash": "0123"}
    at.switch_page("pages/2_Compress.py").run()
    assert_clean(at)
    before = ExperimentStore(_home()).count()
    upload.unlink()  # e.g. the uploads folder was cleaned; the page still has the model in its cache
    at.button(key="run.palettize").click().run()
    [*_, job_id] = at.session_state["jobs.mine"]
    _until(at, lambda: at.error, what="the failure message")
    assert not at.exception
    assert [e.value for e in at.error] == [
        f"The run 4-bit palettization, data-free failed: model file {upload.name} is gone ({upload}); "
        "upload it again and resubmit."]
    assert JobQueue(home=_home()).get(job_id=job_id).state == FAILED
    assert ExperimentStore(_home()).count() == before


def test_a_restarted_app_runs_the_queue_it_finds(app, monkeypatch, tmp_path) -> None:
    """What an app restart finds: a queued job runs (the app starts a worker), an orphaned running one fails."""
    home = tmp_path / "restarted"
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(home))
    queue = JobQueue(home=home)
    options = {"eval_limit": 100, "measure_latency": False, "measure_memory": False, "export": False}
    cnn = ModelRef(kind="sample", name="fashion_cnn")
    orphan = queue.submit(model=cnn, data=DataRef(kind="bundled"), spec={"method": "palettize"}, options=options)
    dead = subprocess.Popen(["true"])
    dead.wait()
    queue.claim(pid=dead.pid)  # "running" in a worker that is gone (the machine rebooted, say)
    waiting = queue.submit(model=cnn, data=DataRef(kind="bundled"), spec={"method": "palettize"}, options=options,
                           label="left in the queue")
    at = app()  # the app starts: no click, no submit
    assert_clean(at)
    [done] = queue.wait(job_ids=[waiting], timeout=240)
    assert done.state == DONE and ExperimentStore(home).get(done.experiment_id)["job_id"] == waiting
    failed = queue.get(job_id=orphan)
    assert failed.state == FAILED and failed.error.startswith("worker stopped")


@pytest.fixture(autouse=True)
def _private_jobs(tmp_path, monkeypatch) -> None:
    """A timing lock private to the test (other runs on the machine don't block it); idle workers leave soon."""
    monkeypatch.setenv("COMPRESSION_STUDIO_TIMING_LOCK", str(tmp_path / "timing.lock"))
    monkeypatch.setenv("COMPRESSION_STUDIO_WORKER_IDLE", "15")


def _home() -> Path:
    return Path(os.environ["COMPRESSION_STUDIO_HOME"])


def _wait(predicate, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _until(at, predicate, *, what: str, timeout: float = 300):
    """Rerun the session (what the page's polling does in a browser) until `predicate` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
        at.run()
    return at
