"""Explore page (through app.py): the Sensitivity and Mixed precision tabs (a cached table; the measured search job)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from core.data import load_fashion_mnist
from core.explore.sensitivity import SensitivityConfig, run_sensitivity
from core.formatting import NA
from core.models.sources import load_model
from core.paths import cache_dir
from tests.pages.conftest import assert_clean, plotly_specs

PAGE = "pages/6_Explore.py"
SETTINGS = ["pal2", "pal8"]


@pytest.fixture(autouse=True)
def _private_jobs(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("COMPRESSION_STUDIO_TIMING_LOCK", str(tmp_path / "timing.lock"))
    monkeypatch.setenv("COMPRESSION_STUDIO_WORKER_IDLE", "15")


def _cached_table() -> None:
    """What the page's worker process would have cached for fashion_cnn with the settings the test picks."""
    run_sensitivity(model=load_model("sample:fashion_cnn"), dataset=load_fashion_mnist(),
                    config=SensitivityConfig(settings=tuple(SETTINGS), eval_limit=100),
                    cache_root=cache_dir(Path(os.environ["COMPRESSION_STUDIO_HOME"])))


def _pick(at) -> None:
    at.multiselect(key="cfg.explore.sens.settings").set_value(SETTINGS).run()
    at.select_slider(key="cfg.explore.sens.images").set_value(100).run()


@pytest.mark.slow
def test_sensitivity_tab_offers_a_run_then_shows_heatmap_table_and_histogram(app) -> None:
    at = app(page=PAGE)
    assert_clean(at)
    _pick(at)
    assert any(b.key == "explore.sens.run" for b in at.button)  # nothing cached yet: a run is offered
    _cached_table()
    at.run()
    assert_clean(at)
    specs = [json.loads(s) for s in plotly_specs(at)]
    heatmap = next(s for s in specs if s["data"][0]["type"] == "heatmap")
    assert len(heatmap["data"][0]["y"]) == 6  # one row per weight layer of fashion_cnn
    table = next(d.value for d in at.dataframe if "output SNR (dB)" in d.value.columns)
    assert len(table) == 12 and table["output SNR (dB)"].is_monotonic_increasing
    at.selectbox(key="explore.sens.layer").select("classifier.1").run()
    at.selectbox(key="explore.sens.setting").select("pal2").run()
    assert_clean(at)
    assert any("classifier.1" in s and "palettize 2-bit" in s for s in plotly_specs(at))


def test_mixed_precision_tab_builds_a_recipe_with_exports(app) -> None:
    at = app(page=PAGE)
    _pick(at)
    _cached_table()
    at.run()
    at.number_input(key="explore.mp.value.bits_per_weight").set_value(3.0).run()
    assert_clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Bits / weight"]) <= 3.0
    assert metrics["Predicted size"].endswith("MB")
    layers = next(d.value for d in at.dataframe if "setting" in d.value.columns and "bytes" in d.value.columns)
    assert len(layers) == 6
    assert {"recipe_spec.yaml", "coremltools_config.yaml", "recipe.py"} <= {
        b.proto.label for b in at.get("download_button")}
    at.number_input(key="explore.mp.value.bits_per_weight").set_value(0.5).run()
    assert any("out of reach" in e.value for e in at.error)


@pytest.mark.slow
def test_measured_search_runs_as_a_job_and_shows_its_recipe(app) -> None:
    """The measured engine: started from the page, computed by a worker, found again by a fresh session."""
    from core.explore.recipe_runs import latest_search_job
    from core.jobs import DONE, RECIPE_SEARCH_JOB, JobQueue
    from core.store import ExperimentStore

    home = Path(os.environ["COMPRESSION_STUDIO_HOME"])
    at = app(page=PAGE)
    at.radio(key="cfg.explore.mp.engine").set_value("measured").run()
    at.multiselect(key="cfg.explore.mps.settings").set_value(["pal2", "pal4", "pal8"]).run()
    at.select_slider(key="cfg.explore.mps.images").set_value(60).run()
    at.toggle(key="cfg.explore.mps.run").set_value(False).run()
    at.number_input(key="explore.mps.value.bits_per_weight").set_value(4.0).run()
    at.button(key="explore.mps.start").click().run()
    assert_clean(at)
    job = latest_search_job(queue=JobQueue(home=home), model="sample:fashion_cnn")
    assert job is not None and job.kind == RECIPE_SEARCH_JOB
    assert job.options["config"]["settings"] == ["pal2", "pal4", "pal8"] and job.options["run"] is False
    assert job.finished or any(b.key == "explore.mps.cancel" for b in at.button)  # the progress panel
    [done] = JobQueue(home=home).wait(job_ids=[job.id], timeout=240)
    assert done.state == DONE, done.error

    at = app(page=PAGE)  # a new session (a reload): the search is found in the queue
    at.radio(key="cfg.explore.mp.engine").set_value("measured").run()
    assert_clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Bits / weight"]) <= 4.0 and metrics["Size"].endswith("MB")
    assert metrics["Real run drop"] == NA  # not run yet
    curve = next(s for s in plotly_specs(at) if "knapsack path" in s)
    assert "measured (calibration slice)" in curve and "chosen recipe (measured)" in curve
    assert {"recipe_spec.yaml", "coremltools_config.yaml", "recipe.py"} <= {
        b.proto.label for b in at.get("download_button")}
    layers = next(d.value for d in at.dataframe if "output change alone (KL)" in d.value.columns)
    assert len(layers) == 6

    at.session_state["cfg.eval_limit"] = 100
    at.button(key="explore.mps.run_recipe").click().run()  # the chosen recipe as a real experiment job
    assert_clean(at)
    run = next(j for j in JobQueue(home=home).list() if j.kind == "experiment")
    [ran] = JobQueue(home=home).wait(job_ids=[run.id], timeout=240)
    assert ran.state == DONE, ran.error
    assert ExperimentStore(home).get(ran.experiment_id)["origin"]["id"] == f"recipe-search-{job.id}"
    at.run()
    assert_clean(at)
    assert any("measured (real .mlpackage)" in s for s in plotly_specs(at))
    assert any(f"Experiment #{ran.experiment_id}" in c.value for c in at.caption)
