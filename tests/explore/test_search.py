"""Accuracy-budget search over existing records, its sentence, and the layer-skip refinement it runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from core.explore.search import (
    SearchError,
    SearchGoal,
    candidates_frame,
    missing_configs,
    pick_winner,
    refinement_specs,
    stakeholder_sentence,
)
from core.specs import spec_from_dict


def _record(id_: int, spec: dict, *, acc: float, size: int, latency: float | None = None, layers=None,
            validation_acc: float | None = -1.0) -> dict:
    """A record as a search's run leaves it: test numbers, and validation numbers (the same drop by default)."""
    normalised = spec_from_dict(spec)
    validation = acc if validation_acc == -1.0 else validation_acc
    return {
        "id": id_, "kind": "experiment", "spec": normalised.to_dict(), "spec_summary": normalised.summary(),
        "eval_images": 10_000, "accuracy_meaningful": True,
        "validation_images": None if validation is None else 2000, "validation_accuracy_top1": validation,
        "baseline_validation_accuracy_top1": None if validation is None else 0.92,
        "method": spec["method"], "accuracy_top1": acc, "baseline_accuracy_top1": 0.92, "size_bytes": size,
        "compression_ratio_fp16": 4_000_000 / size, "latency_ms_p50": latency,
        "latency_ratio": None if latency is None else latency / 2.0, "layers": layers or [],
        "origin": {"kind": "sweep", "id": 1, "parent_experiment_id": None, "label": "sweep #1: w"},
    }


LAYERS = [
    {"name": "stem", "compressed": True, "params": 3_000, "snr_db": 9.0},
    {"name": "body", "compressed": True, "params": 900_000, "snr_db": 8.0},
    {"name": "fc", "compressed": True, "params": 2_600, "snr_db": 15.0},
]
RECORDS = [
    _record(1, {"method": "palettize", "n_bits": 8}, acc=0.919, size=1_000_000, latency=2.0),
    _record(2, {"method": "palettize", "n_bits": 4}, acc=0.915, size=600_000, latency=2.1),
    _record(3, {"method": "palettize", "n_bits": 2}, acc=0.80, size=350_000, latency=2.2, layers=LAYERS),
    _record(4, {"method": "quantize_weights"}, acc=0.918, size=1_050_000, latency=1.5),
]


def test_the_smallest_within_the_budget_wins_with_a_plain_sentence() -> None:
    result = pick_winner(RECORDS, goal=SearchGoal(max_drop_pts=1.0, objective="size"))
    assert result.winner["id"] == 2  # 2-bit is smaller but 12 points down
    assert stakeholder_sentence(result.winner) == "6.7× smaller, −0.5 points"
    assert "within 1 point " in result.sentence and "6.7× smaller, −0.5 points" in result.sentence
    frame = result.candidates
    assert list(frame["id"]) == [3, 2, 1, 4] and list(frame["within_budget"]) == [False, True, True, True]


def test_a_tighter_budget_or_the_latency_objective_changes_the_winner() -> None:
    assert pick_winner(RECORDS, goal=SearchGoal(max_drop_pts=0.2)).winner["id"] == 1
    fastest = pick_winner(RECORDS, goal=SearchGoal(max_drop_pts=1.0, objective="latency")).winner
    assert fastest["id"] == 4 and stakeholder_sentence(fastest, objective="latency") == "1.3× faster, −0.2 points"
    nothing = pick_winner(RECORDS, goal=SearchGoal(max_drop_pts=0.01))
    assert nothing.winner is None and "Nothing is within 0.01 points" in nothing.sentence


@pytest.mark.parametrize(("kwargs", "field"), [({"max_drop_pts": -1}, "max_drop_pts"),
                                               ({"objective": "energy"}, "objective")])
def test_a_bad_goal_names_its_field(kwargs, field) -> None:
    with pytest.raises(SearchError, match=f"^{field}"):
        SearchGoal(**kwargs)


def test_refinement_keeps_the_sensitive_small_layers_at_the_safe_setting() -> None:
    specs = refinement_specs(RECORDS, goal=SearchGoal(max_drop_pts=1.0))
    # the 2-bit run broke the budget while smaller than the winner: its low-SNR, cheap layers go to 4-bit first
    assert [list(s["overrides"]) for s in specs] == [["^stem$"], ["^stem$", "^fc$"]]
    assert all(s["n_bits"] == 2 for s in specs)
    assert specs[0]["overrides"]["^stem$"]["n_bits"] == 4
    refined = {**RECORDS[2], "id": 9, "spec": specs[1], "accuracy_top1": 0.912, "validation_accuracy_top1": 0.912,
               "size_bytes": 400_000}
    assert "2-bit palettization, data-free + 2 per-layer override(s)" in pick_winner(
        [*RECORDS, refined], goal=SearchGoal(max_drop_pts=1.0)).sentence
    spec = spec_from_dict(specs[1])
    assert spec.resolve("stem").n_bits == 4 and spec.resolve("body").n_bits == 2  # overrides round-trip


def test_the_winner_is_chosen_on_validation_images_and_confirmed_on_the_test_images() -> None:
    """A setting that looks fine on the test images but not on the validation images is not chosen; the sentence
    gives both numbers."""
    lucky = _record(5, {"method": "palettize", "n_bits": 3}, acc=0.918, size=450_000, validation_acc=0.89)
    honest = _record(2, {"method": "palettize", "n_bits": 4}, acc=0.912, size=600_000, validation_acc=0.914)
    result = pick_winner([lucky, honest], goal=SearchGoal(max_drop_pts=1.0))
    assert result.winner["id"] == 2  # the lucky one is 0.2 points down on test, but 3 points on validation
    assert ("chosen on 2,000 validation images: −0.6 points; confirmed on 10,000 test images: −0.8 points"
            in result.sentence)
    frame = result.candidates.set_index("id")
    assert frame.loc[5, "drop_pts"] == pytest.approx(0.2) and not frame.loc[5, "within_budget"]
    # experiments without validation numbers (manual runs) are never judged on their test images
    manual = [_record(6, {"method": "palettize", "n_bits": 8}, acc=0.919, size=1_000_000, validation_acc=None)]
    none = pick_winner(manual, goal=SearchGoal(max_drop_pts=1.0))
    assert none.winner is None and "never chosen on the test images" in none.sentence


def test_missing_configs_skips_what_the_model_already_has() -> None:
    wanted = [{"method": "palettize", "n_bits": 4}, {"method": "palettize", "n_bits": 3}]
    assert missing_configs(configs=wanted, records=RECORDS) == [{"method": "palettize", "n_bits": 3}]
    assert candidates_frame([], goal=SearchGoal()).empty


# --------------------------------------------------------------------------- the search as a job


@pytest.mark.slow
def test_a_search_on_a_clean_store_runs_sensitivity_and_mixed_precision_as_jobs(home) -> None:
    """What the page submits: a budget_search job whose worker runs the missing uniform config, has the sensitivity
    table computed (a sensitivity job: none is cached), runs mixed-precision candidates from it, and records its
    runs and winner in the book; its progress is its job's."""
    from core.explore.charts import lineage_figure, lineage_frame
    from core.explore.search import BUDGET_SEARCH_JOB, SearchBook, submit_search, wait_for_search
    from core.explore.sensitivity import cached_results
    from core.explore.sensitivity_job import SENSITIVITY_JOB
    from core.jobs import DataRef, JobQueue, LocalExecutor, ModelRef
    from core.paths import cache_dir
    from core.store import ExperimentStore
    from core.tables import origin_label
    from tests.explore.conftest import FAST_OPTIONS

    assert cached_results(cache_root=cache_dir(home)) == []
    search_id = submit_search(
        executor=LocalExecutor(home=home), model=ModelRef(kind="sample", name="fashion_cnn"),
        data=DataRef(kind="bundled"), goal=SearchGoal(max_drop_pts=2.0, refine=False), options=FAST_OPTIONS,
        configs=[{"method": "palettize", "n_bits": 8}])
    run = wait_for_search(search_id=search_id, home=home, timeout=600)
    assert run.state == "done", (run.state, run.error, run.message)
    assert run.progress == 1.0 and run.pid is not None and run.pid != os.getpid() and run.failed == ()
    jobs = {job.id: job for job in JobQueue(home=home).list()}
    assert jobs[run.job_id].kind == BUDGET_SEARCH_JOB and jobs[run.job_id].state == "done"
    assert [j.kind for j in jobs.values()].count(SENSITIVITY_JOB) == 1  # the table was computed by a job too
    [table] = cached_results(cache_root=cache_dir(home))  # computed by the search, cached for the page
    assert table.meta["model"] == "sample:fashion_cnn" and table.has_labels
    records = ExperimentStore(home).list()
    assert sorted(r["id"] for r in records) == sorted(run.ran) and len(run.job_ids) == len(records)
    assert all(r["origin"] == {"kind": "search", "id": search_id, "parent_experiment_id": None,
                               "label": f"search #{search_id}: smallest within 2 pts"} for r in records)
    mixed = [r for r in records if (r.get("spec") or {}).get("overrides")]
    assert mixed, [r["spec_summary"] for r in records]  # mixed-precision candidates ran as real experiments
    assert run.winner_id in {r["id"] for r in records} and "smaller" in run.sentence
    assert SearchBook(home=home).latest(model="sample:fashion_cnn").id == search_id
    # lineage: Compare's origin filter and the map both hang these under the search
    label = f"search #{search_id}: smallest within 2 pts"
    assert {origin_label(r) for r in records} == {label}
    tree = lineage_figure(lineage_frame(records)).data[0]
    parents = dict(zip(tree.ids, tree.parents, strict=True))
    assert {parents[f"exp:{r['id']}"] for r in records} == {f"origin:{label}"} and parents[f"origin:{label}"] == "root"


@pytest.mark.slow
def test_cancelling_a_search_stops_its_job_and_its_runs(home) -> None:
    from core.explore.search import SearchBook, submit_search, wait_for_search
    from core.jobs import DataRef, JobQueue, LocalExecutor, ModelRef
    from tests.explore.conftest import FAST_OPTIONS

    # enough runs that some are still queued when the cancel lands, even on a loaded machine
    configs = [{"method": "palettize", "n_bits": bits, "seed": seed} for bits in (2, 3, 4, 6, 8) for seed in (0, 1, 2)]
    search_id = submit_search(
        executor=LocalExecutor(home=home), model=ModelRef(kind="sample", name="fashion_cnn"),
        data=DataRef(kind="bundled"), goal=SearchGoal(), options=FAST_OPTIONS, configs=configs)
    book = SearchBook(home=home)
    deadline = time.monotonic() + 120
    while not book.get(search_id=search_id).job_ids:  # its runs are queued
        assert time.monotonic() < deadline, book.get(search_id=search_id)
        time.sleep(0.3)
    book.request_cancel(search_id=search_id)
    run = wait_for_search(search_id=search_id, home=home, timeout=120)
    assert run.state == "cancelled" and "Cancelled" in run.message
    queue = JobQueue(home=home)
    deadline = time.monotonic() + 60  # a running job stops at its next step; queued ones at once
    while not all(queue.get(job_id=j).finished for j in run.job_ids):
        assert time.monotonic() < deadline, [queue.get(job_id=j).state for j in run.job_ids]
        time.sleep(0.3)
    assert any(queue.get(job_id=j).state == "cancelled" for j in run.job_ids)
    assert queue.get(job_id=run.job_id).state == "cancelled"  # the search's own job, cancelled through the queue


def test_a_search_whose_worker_died_is_marked_failed(home) -> None:
    from core.explore.search import BUDGET_SEARCH_JOB, SearchBook
    from core.jobs import DataRef, JobQueue, ModelRef

    book = SearchBook(home=home)
    model, data = ModelRef(kind="sample", name="fashion_cnn"), DataRef(kind="bundled")
    search_id = book.create(model=model, data=data, goal=SearchGoal(), options={}, configs=None)
    queue = JobQueue(home=home)
    job_id = queue.submit(model=model, data=data, spec={}, options={"search_id": search_id}, kind=BUDGET_SEARCH_JOB)
    book.update(search_id=search_id, job_id=job_id)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    queue.claim(job_id=job_id, pid=child.pid)  # "running" on a worker that no longer exists
    run = book.get(search_id=search_id)
    assert run.state == "failed" and run.error.startswith("worker stopped"), (run.state, run.error)
