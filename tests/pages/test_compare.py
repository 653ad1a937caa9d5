"""Compare page on two real experiments: table, charts, budget, flipped images, diff and downloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import charts
from core.compress.registry import method_color
from core.metrics import METRICS, metrics_in
from core.store import ExperimentStore, experiments_frame
from tests.pages.conftest import assert_clean, plotly_specs


@pytest.fixture(scope="module")
def studio_home(experiments_home: tuple[Path, list[int]]) -> Path:
    return experiments_home[0]


def test_table_and_scatter(app, studio_home: Path) -> None:
    at = app(page="pages/3_Compare.py")
    assert_clean(at)
    table = at.dataframe[0].value
    assert list(table["#"]) == [1, 2]
    assert list(table["method"]) == ["Palettize", "Prune"]
    assert float(table.loc[0, "size vs fp16"].removesuffix("× smaller")) > 3  # 4-bit LUT indices vs fp16
    latency = table.loc[1, "latency vs baseline"]  # prune runs the baseline's computation: an interval, never "+22 %"
    assert latency.startswith(("no measurable difference (±", "same computation (")), latency
    assert list(table["artifact = evaluated"]) == ["yes", "yes"]  # both packages hold the weights that were evaluated
    # the measured columns are the metrics declared with the "compare" view, in declaration order
    assert [c for c in table.columns if c in {m.column_header for m in METRICS}] == [m.column_header for m in metrics_in("compare")]
    records = {r["id"]: r for r in ExperimentStore(studio_home).list()}
    for row in table.itertuples(index=False):  # the output PSNR each run recorded, in dB
        psnr = records[row[0]]["output_psnr_db"]
        assert psnr is not None and table.loc[table["#"] == row[0], "PSNR dB"].iloc[0] == pytest.approx(psnr)

    scatter = json.loads(plotly_specs(at)[0])
    names = [trace.get("name") for trace in scatter["data"]]
    assert {"Palettize", "Prune", "Baseline (fp16)"} <= set(names)
    palettize = next(t for t in scatter["data"] if t.get("name") == "Palettize")
    assert palettize["marker"]["color"] == method_color("palettize")
    assert [d.label for d in at.get("download_button")][:2] == ["Experiments CSV", "HTML report"]


def test_budget_slider_moves_the_line_and_the_pick(app, studio_home: Path) -> None:
    frame = experiments_frame(ExperimentStore(studio_home).list())
    at = app(page="pages/3_Compare.py")
    for budget in (20.0, 0.0):
        at.slider(key="cfg.compare.budget").set_value(budget).run()
        assert_clean(at)
        best = charts.best_within_budget(frame, budget_pts=budget)
        pick = next(m for m in at.metric if m.label == "Smallest within budget")
        assert pick.value == ("none" if best is None else f"#{int(best['id'])}")
        if best is not None:  # the headline names the setting, not only its number
            assert any(c.value.startswith(f"**{best['spec_summary']}**") for c in at.caption)
        scatter = json.loads(plotly_specs(at)[0])
        line = next(s for s in scatter["layout"]["shapes"] if s.get("type") == "line")
        baseline = frame["baseline_accuracy_top1"].iloc[-1] * 100
        assert line["y0"] == pytest.approx(baseline - budget)


def test_tabs_flipped_images_and_diff(app, studio_home: Path) -> None:
    store = ExperimentStore(studio_home)
    flipped = {r["id"]: r["flipped"] for r in store.list()}
    at = app(page="pages/3_Compare.py")
    assert [t.label for t in at.tabs] == ["Latency", "Size breakdown", "Per-class accuracy", "Flipped images",
                                          "Side by side", "Downloads"]
    specs = plotly_specs(at)
    assert len(specs) == 5  # scatter, latency, latency ratio with its interval, size breakdown, per-class
    ratio = json.loads(specs[2])["data"][0]
    assert ratio["error_x"]["type"] == "data" and ratio["name"] == "compressed ÷ baseline"
    assert json.loads(specs[4])["data"][0]["type"] == "heatmap"
    assert any("times its own baseline beside it" in c.value for c in at.caption)
    shown = at.selectbox(key="compare.flip_exp").value
    assert len(at.image) == min(32, flipped[shown])  # thumbnails from the dataset, one per flipped prediction
    diff = next(d.value for d in at.dataframe if "what" in d.value.columns).set_index("what")
    assert "top-1 accuracy" in diff.index and "setting · method" in diff.index
    assert list(diff.index[: len(metrics_in("diff"))]) == [m.label for m in metrics_in("diff")]
    assert diff.loc["output PSNR", "A"].endswith(" dB")
    assert any(d.label.startswith("Core ML package") for d in at.get("download_button"))


def test_html_report_of_real_experiments(studio_home: Path) -> None:
    from core.report import build_report
    from tests.conftest import ReportScripts

    records = ExperimentStore(studio_home).list()
    page = build_report(records=records, budget_pts=5.0)
    tags = ReportScripts()
    tags.feed(page)
    assert tags.sources == [] and tags.links == []  # nothing is fetched: it works offline
    for record in records:
        assert record["spec_summary"] in page
    assert page.count("Plotly.newPlot") == 5  # scatter, latency, latency ratio, size breakdown, per-class
    assert "output PSNR" in page  # the report's table shows the metrics declared with the "report" view
