"""The measured recipe search as a background job: run in a worker process, read back, run as a real experiment."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from core.explore import recipe_runs as rr
from core.explore.mixed_precision import RecipeError, RecipeTarget, setting_of
from core.explore.mp_search import RecipeSearchConfig
from core.jobs import CANCELLED, DONE, RECIPE_SEARCH_JOB, RUNNING, DataRef, LocalExecutor, ModelRef
from core.specs import spec_from_dict
from core.store import ExperimentStore

CNN = ModelRef(kind="sample", name="fashion_cnn")
BUNDLED = DataRef(kind="bundled")
SMALL = RecipeSearchConfig(settings=("pal2", "pal4", "pal8"), calibration_images=60, path_points=8)


def _request(**changes) -> rr.MeasuredSearchRequest:
    values = {"target": RecipeTarget(kind="bits_per_weight", value=4.0), "config": SMALL, **changes}
    return rr.MeasuredSearchRequest(**values)


@pytest.mark.slow
def test_search_job_chooses_a_recipe_runs_it_and_its_overrides_round_trip(home: Path) -> None:
    executor = LocalExecutor(home=home, max_workers=1)
    job_id = rr.submit_recipe_search(executor=executor, model=CNN, data=BUNDLED,
                                     request=_request(run=True, run_eval_limit=100))
    [job] = executor.wait(job_ids=[job_id], timeout=300)
    assert job.state == DONE, job.error
    assert job.kind == RECIPE_SEARCH_JOB and job.worker_pid != os.getpid()  # computed in a worker, not here
    assert job.message.startswith("Recipe: ") and f"experiment #{job.experiment_id}" in job.message

    result = rr.search_result(job)
    assert result is not None and result.request == _request(run=True, run_eval_limit=100)
    chosen = result.chosen
    assert chosen.predicted_bits_per_weight <= 4.0 and chosen.calibration["images"] == 60
    # the curve: the knapsack path, fp16 first, every candidate measured on the calibration slice
    frame = result.candidates_frame()
    assert len(frame) >= 3 and frame["predicted_mb"].iloc[0] == frame["predicted_mb"].max()
    assert frame["calibration_drop_pts"].notna().all()
    assert [row["layer"] for row in result.layers] == [layer for layer, _ in chosen.choices]

    # the spec: through JSON and back, the same overrides; each layer of the real run got its chosen bits
    assert spec_from_dict(chosen.spec.to_dict()) == chosen.spec
    record = ExperimentStore(home).get(job.experiment_id)
    bits = {layer["name"]: layer["bits"] if layer["compressed"] else None for layer in record["layers"]}
    expected = {layer: None if key is None else float(setting_of(key).spec["n_bits"]) for layer, key in chosen.choices}
    assert bits == expected
    assert record["origin"] == {"kind": "recipe", "id": f"recipe-search-{job_id}", "parent_experiment_id": None,
                                "label": f"measured recipe search #{job_id}"}
    assert record["artifact_path"] and Path(record["artifact_path"]).exists()  # a real .mlpackage
    assert result.experiment["experiment_id"] == job.experiment_id
    assert 0.95 <= result.experiment["size_ratio"] <= 1.05  # the size model's prediction holds for the artifact
    assert rr.recipe_experiments(ExperimentStore(home).list(), job_id=job_id) == [record]

    # what the page draws: the path, the calibration measurements, the chosen star and the real run
    names = [trace.name for trace in rr.curve_figure(result, records=[record]).data]
    assert {"predicted (knapsack path)", "measured (calibration slice)", "chosen recipe (measured)",
            "measured (real .mlpackage)"} <= set(names)
    assert rr.latest_search_job(queue=executor.queue, model="sample:fashion_cnn").id == job_id


@pytest.mark.slow
def test_a_running_search_can_be_cancelled_and_saves_nothing(home: Path) -> None:
    executor = LocalExecutor(home=home, max_workers=1)
    job_id = rr.submit_recipe_search(executor=executor, model=CNN, data=BUNDLED, request=_request(run=True))
    deadline = time.monotonic() + 120
    while (job := executor.queue.get(job_id=job_id)).state != RUNNING or job.progress <= 0.02:
        assert time.monotonic() < deadline and not job.finished, (job.state, job.error)
        time.sleep(0.1)
    executor.queue.cancel(job_id=job_id)
    [job] = executor.wait(job_ids=[job_id], timeout=120)
    assert job.state == CANCELLED and job.result is None and rr.search_result(job) is None
    assert ExperimentStore(home).count() == 0


def test_requests_round_trip_and_bad_ones_name_the_field() -> None:
    request = _request(run=True, run_eval_limit=200)
    assert rr.MeasuredSearchRequest.from_dict(request.to_dict()) == request
    with pytest.raises(RecipeError, match="run_eval_limit must be a positive number"):
        _request(run_eval_limit=0)
    with pytest.raises(RecipeError, match="unknown field"):
        rr.MeasuredSearchRequest.from_dict({**request.to_dict(), "config": {"images": 5}})
    with pytest.raises(RecipeError, match="calibration_images must be an integer"):
        rr.MeasuredSearchRequest.from_dict({**request.to_dict(), "config": {"calibration_images": 3, "settings": ["pal4"]}})
    with pytest.raises(RecipeError, match="target kind must be one of"):
        rr.MeasuredSearchRequest.from_dict({**request.to_dict(), "target": {"kind": "speed", "value": 2}})
