"""Explore page through app.py: the tabs, the plan before a start, grid errors, a real tiny sweep, search, lineage."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from core.explore.sweeps import SweepBook
from core.store import ExperimentStore
from tests.pages.conftest import assert_clean, plotly_specs, table_problems

PAGE = "pages/6_Explore.py"


@pytest.fixture(autouse=True)
def _private_jobs(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("COMPRESSION_STUDIO_TIMING_LOCK", str(tmp_path / "timing.lock"))
    monkeypatch.setenv("COMPRESSION_STUDIO_WORKER_IDLE", "15")


def _home() -> Path:
    return Path(os.environ["COMPRESSION_STUDIO_HOME"])


def _values(array) -> list:
    """A Plotly JSON array: a list, or numpy data packed as {"dtype", "bdata"} (base64)."""
    if isinstance(array, dict):
        return list(np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]))
    return list(array)


def _results(at):
    """The sweep's live results table (the one with a state column)."""
    return next(d.value for d in at.dataframe if "state" in d.value.columns)


def test_tabs_and_the_plan_before_starting(app) -> None:
    at = app(page=PAGE)
    assert_clean(at)
    assert [t.label for t in at.tabs] == ["Sweep", "Sensitivity", "Mixed precision", "Budget search", "Lineage"]
    at.selectbox(key="cfg.explore.preset").select("weight-only exploration").run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Configs"] == "25 of 25"
    assert metrics["Estimated time"].endswith(("s", "min"))
    assert int(metrics["Layers left uncompressed by a setting"]) > 0  # e.g. classifier.4 (10 channels), group size 16
    assert any(b.key == "explore.start" and "25 runs" in b.label for b in at.button)
    mine = ("cfg.explore.grid_kind", "cfg.explore.preset", "cfg.explore.latency", "cfg.explore.export",
            "cfg.explore.max_drop", "cfg.explore.objective", "cfg.explore.refine", "cfg.explore.search_preset")
    widgets = {w.key: w for w in [*at.radio, *at.selectbox, *at.toggle, *at.slider] if w.key in mine}
    assert set(widgets) == set(mine)
    assert all(w.help for w in widgets.values()), [k for k, w in widgets.items() if not w.help]


def test_an_invalid_custom_grid_says_which_field(app) -> None:
    at = app(page=PAGE)
    at.radio(key="cfg.explore.grid_kind").set_value("Custom grid").run()
    at.multiselect(key="cfg.explore.methods").set_value([]).run()
    assert not at.exception
    assert any("methods: the grid is empty" in e.value for e in at.error)
    assert "explore.start" not in [b.key for b in at.button]


@pytest.mark.slow
def test_a_tiny_sweep_fills_the_table_and_the_scatter(app) -> None:
    at = app(page=PAGE)
    at.session_state["cfg.eval_limit"] = 500
    at.radio(key="cfg.explore.grid_kind").set_value("Custom grid").run()
    at.multiselect(key="cfg.explore.methods").set_value(["palettize", "quantize_weights"]).run()
    at.multiselect(key="cfg.explore.bits").set_value([8]).run()
    at.toggle(key="cfg.explore.export").set_value(False).run()
    assert {m.label: m.value for m in at.metric}["Configs"] == "2 of 2"
    at.button(key="explore.start").click().run()
    assert_clean(at)
    sweep_id = at.session_state["explore.sweep_id"]
    deadline = time.monotonic() + 300
    while not all(s == "done" for s in _results(at)["state"]):
        assert time.monotonic() < deadline, "timed out waiting for the sweep"
        assert "failed" not in set(_results(at)["state"])
        time.sleep(1.0)
        at.run()
    assert_clean(at)
    assert table_problems(at, PAGE) == []  # the results table: plain headers, "not timed", never "None"
    assert set(_results(at)["latency p50"]) == {"not timed"}
    scatter = json.loads(plotly_specs(at)[0])
    points = sum(len(_values(t["x"])) for t in scatter["data"] if t.get("name") != "Pareto front")
    assert points == 2
    records = ExperimentStore(_home()).list()
    assert [r["origin"]["id"] for r in records] == [sweep_id, sweep_id]
    assert SweepBook(home=_home()).get(sweep_id=sweep_id).name == "custom grid"
    # every config also measured on training-pool images (what a winner is chosen by) beside the test images
    table = _results(at)
    assert table["Δ pts, validation"].notna().all() and table["Δ pts, test"].notna().all()
    assert any(c.value.startswith("Dashed line: the baseline ") and " on 500 Fashion-MNIST test images (" in c.value
               for c in at.caption)

    # The budget search answers from these two, with a sentence; the lineage map hangs both under the sweep.
    at.slider(key="cfg.explore.max_drop").set_value(10.0).run()
    sentence = next(s.value for s in at.success if "smaller" in s.value and "points" in s.value)
    # chosen on the validation images, confirmed on the test images: both numbers on the page
    assert "chosen on 2,000 validation images: " in sentence and "; confirmed on 500 test images: " in sentence
    tree = json.loads(plotly_specs(at)[-1])["data"][0]
    assert tree["type"] == "treemap" and tree["parents"].count(f"origin:sweep #{sweep_id}: custom grid") == 2

    # Compare filters by origin once there is more than one; here all came from one sweep.
    at.switch_page("pages/3_Compare.py").run()
    assert_clean(at)
    assert len(at.dataframe[0].value) == 2


@pytest.mark.slow
def test_the_search_runs_as_a_job_and_a_new_session_follows_it(app) -> None:
    """The Streamlit process never compresses: the search is a job a worker runs, whose progress any session (a
    reload, a page switch) reads through the search book, and can cancel."""
    from core.explore.search import SearchBook, wait_for_search

    at = app(page=PAGE)
    at.session_state["cfg.eval_limit"] = 100
    at.slider(key="cfg.explore.max_drop").set_value(0.5).run()
    at.button(key="explore.search.run").click().run()
    assert_clean(at)
    [run] = SearchBook(home=_home()).list()
    deadline = time.monotonic() + 120
    while run.pid is None and not run.finished and time.monotonic() < deadline:  # queued until a worker claims it
        time.sleep(0.2)
        run = SearchBook(home=_home()).get(search_id=run.id)
    assert run.pid is not None and run.pid != os.getpid() and run.goal.max_drop_pts == 0.5
    assert any(b.key == "explore.search.cancel" for b in at.button)  # the progress panel replaced the start button
    assert "explore.search.run" not in [b.key for b in at.button]

    again = app(page=PAGE)  # a reload: a new session finds the running search and its goal
    assert again.slider(key="cfg.explore.max_drop").value == 0.5
    again.button(key="explore.search.cancel").click().run()
    run = wait_for_search(search_id=run.id, home=_home(), timeout=180)
    assert run.state == "cancelled", (run.state, run.error)
    again.run()
    assert any(f"Search #{run.id}" in w.value and "Cancelled" in w.value for w in again.warning)
    assert any(b.key == "explore.search.run" for b in again.button)
