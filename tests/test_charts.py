"""Plotly figure builders: built from hand-made frames, checked through the figure's data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core import charts
from core.tables import experiments_frame, layers_frame, per_class_frame
from tests.conftest import make_record


def _records() -> list[dict]:
    return [
        dict(make_record(method="palettize", accuracy=0.915, size=800_000, latency=1.0), id=1),
        dict(make_record(method="palettize", summary="palettize 2-bit", accuracy=0.85, size=250_000), id=2),
        dict(make_record(method="prune", summary="prune 50%", accuracy=0.905, size=900_000), id=3),  # dominated by #1
        dict(make_record(method="torch_static", summary="torch static", accuracy=0.90, size=500_000, latency=0.3), id=4),
    ]


def test_pareto_frontier_drops_dominated_points() -> None:
    points = pd.DataFrame({"id": [1, 2, 3, 4], "x": [1.0, 2.0, 3.0, 0.5], "y": [90.0, 95.0, 94.0, 80.0]})
    frontier = charts.pareto_frontier(points, x="x", y="y")
    assert list(frontier["id"]) == [4, 1, 2]


def test_accuracy_size_figure() -> None:
    frame = experiments_frame(_records())
    fig = charts.accuracy_size_figure(frame, budget_pts=2.5, highlight_ids=[4])
    by_name = {t.name: t for t in fig.data}
    assert by_name["Palettize"].marker.color == charts.method_color("palettize")
    assert by_name["PyTorch static int8"].marker.color == charts.method_color("torch_static")
    assert list(by_name["Palettize"].y) == pytest.approx([91.5, 85.0])
    assert list(by_name["Palettize"].x) == pytest.approx([0.8, 0.25])
    assert by_name["PyTorch static int8"].marker.size == (16,)  # highlighted
    star = by_name["Baseline (fp16)"]
    assert star.marker.symbol == "star" and star.x == (1.6,) and star.y == pytest.approx((92.0,))
    # Frontier: 2-bit (smallest), static int8, 4-bit palettize, baseline; prune #3 is dominated.
    assert list(by_name["Pareto frontier"].x) == pytest.approx([0.25, 0.5, 0.8, 1.6])
    budget = [s for s in fig.layout.shapes if s.type == "line"]
    assert budget and budget[0].y0 == pytest.approx(92.0 - 2.5)
    assert any("smallest within budget: #4" in (a.text or "") for a in fig.layout.annotations)
    assert fig.layout.xaxis.type == "log"
    assert "MB" in fig.layout.xaxis.title.text and "%" in fig.layout.yaxis.title.text
    assert fig.layout.template.layout.paper_bgcolor == "rgba(0,0,0,0)"
    assert "#1 " not in by_name["Palettize"].hovertemplate  # hover text comes from customdata
    assert by_name["Palettize"].customdata[0][1] == "4-bit palettization, data-free"


def test_best_within_budget() -> None:
    frame = experiments_frame(_records())
    assert int(charts.best_within_budget(frame, budget_pts=2.5)["id"]) == 4
    assert int(charts.best_within_budget(frame, budget_pts=15)["id"]) == 2
    assert charts.best_within_budget(frame, budget_pts=0.1) is None


def test_random_weights_plot_agreement_instead_of_accuracy() -> None:
    records = _records()
    for rec in records:
        rec["accuracy_meaningful"] = False
    fig = charts.accuracy_size_figure(experiments_frame(records))
    assert "agreement" in fig.layout.yaxis.title.text
    assert list(fig.data[0].y) == pytest.approx([97.0, 97.0])


def test_latency_figure_pairs_each_experiment_with_its_baseline() -> None:
    frame = experiments_frame(_records())
    fig = charts.latency_figure(frame)
    baseline, compressed = fig.data
    assert list(baseline.y) == [1.0] * 4
    assert list(compressed.y) == pytest.approx([1.0, 1.0, 1.0, 0.3])
    assert compressed.x[3] == "#4 torch static"  # no bare ratio: the ratio chart shows it with its interval
    assert compressed.customdata[3][1] == "0.30× (no interval recorded)"
    assert list(compressed.error_y.array) == pytest.approx([0.2, 0.2, 0.2, 0.06])
    assert compressed.marker.color[3] == charts.method_color("torch_static")
    assert compressed.marker.color[2] == charts.method_color("prune")
    assert "ms" in fig.layout.yaxis.title.text


def test_size_breakdown_stacks_to_theoretical_size() -> None:
    frame = experiments_frame(_records()[:1])
    fig = charts.size_breakdown_figure(frame)
    bars = [t for t in fig.data if t.type == "bar"]
    assert fig.layout.barmode == "stack"
    assert [t.name for t in bars] == ["LUT indices", "look-up tables", "uncompressed (fp16)"]
    experiment_total = sum(t.y[1] for t in bars)
    assert experiment_total == pytest.approx((800_000 - 1000) / 1e6)
    assert sum(t.y[0] for t in bars) == pytest.approx(1.6)  # the fp16 baseline bar
    marker = next(t for t in fig.data if t.name == "artifact on disk")
    assert marker.y == pytest.approx((0.8,))


def test_per_class_heatmap() -> None:
    fig = charts.per_class_figure(per_class_frame(_records()[:2]))
    heat = fig.data[0]
    assert heat.type == "heatmap"
    z = np.array(heat.z, dtype=float)
    assert z.shape == (2, 10)
    assert z[0, 9] == pytest.approx(-10.5)  # 0.815 vs 0.92
    assert heat.zmid == 0
    assert list(heat.x)[:2] == ["class0", "class1"]


def test_weight_histogram_marks() -> None:
    rng = np.random.default_rng(0)
    original = rng.normal(0, 0.1, 5000)
    lut = np.array([-0.2, -0.05, 0.05, 0.2])
    compressed = lut[np.abs(original[:, None] - lut[None]).argmin(1)]
    fig = charts.weight_histogram_figure(original=original, compressed=compressed, layer_name="fc", method="palettize", lut=lut)
    original_bars, compressed_bars = fig.data[0], fig.data[1]
    assert sum(original_bars.y) == 5000 and sum(compressed_bars.y) == 5000
    assert np.count_nonzero(compressed_bars.y) == 4  # four spikes: one per centroid
    assert len([s for s in fig.layout.shapes if s.type == "line"]) == 4
    assert compressed_bars.marker.color == charts.method_color("palettize")

    grid = np.arange(-128, 128) * 0.002
    fig = charts.weight_histogram_figure(original=original, compressed=original, layer_name="fc", levels=grid, log_y=True)
    grid_entry = next(t for t in fig.data if t.name and t.name.startswith("quantization grid"))
    assert "step 0.002" in grid_entry.name and "too dense" in grid_entry.name  # 256 lines would hide the histogram
    assert not [s for s in fig.layout.shapes if s.type == "line"]
    assert fig.layout.yaxis.type == "log"

    fig = charts.weight_histogram_figure(original=original, compressed=original * (np.abs(original) > 0.05), layer_name="fc",
                                         method="prune", threshold=0.05)
    assert [s.x0 for s in fig.layout.shapes if s.type == "rect"] == [-0.05]
    assert any(t.name.startswith("pruning threshold") for t in fig.data if t.name)


def test_coverage_figure_colours_uncompressed_layers_grey() -> None:
    layers = layers_frame(make_record())
    fig = charts.coverage_figure(layers, method="palettize")
    params = fig.data[0]
    assert list(params.x) == ["features.0", "classifier.1"]
    assert list(params.marker.color) == [charts.BASELINE_COLOR, charts.method_color("palettize")]
    assert "below weight_threshold" in params.customdata[0][0]
    assert params.customdata[1][0] == "compressed"
    assert fig.data[1].y[0] == 16.0


def test_empty_inputs_give_a_message_not_an_error() -> None:
    empty = experiments_frame([])
    for fig in (charts.accuracy_size_figure(empty), charts.latency_figure(empty), charts.size_breakdown_figure(empty),
                charts.per_class_figure(per_class_frame([])), charts.coverage_figure(layers_frame({}))):
        assert fig.layout.annotations and fig.layout.annotations[0].text


def test_latency_axis_is_capped_when_p90_is_noise() -> None:
    records = _records()[:2]
    records[0]["latency_ms_p90"] = 80.0  # one wild outlier on a busy machine
    fig = charts.latency_figure(experiments_frame(records))
    assert fig.layout.yaxis.range[1] == pytest.approx(4 * 1.0 * 1.08)  # 4 × the tallest median, plus headroom
    assert any("run off the chart" in (a.text or "") for a in fig.layout.annotations)


def test_far_below_points_sit_on_the_bottom_edge() -> None:
    records = [*_records(), dict(make_record(method="prune", summary="prune 90%", accuracy=0.30, size=200_000), id=5)]
    fig = charts.accuracy_size_figure(experiments_frame(records), budget_pts=2.0)
    prune = next(t for t in fig.data if t.name == "Prune")
    floor = 92.0 - 10.0  # max(3 × budget, 10) points below the baseline
    assert list(prune.y) == pytest.approx([90.5, floor])
    assert list(prune.marker.symbol) == ["circle", "triangle-down"]
    assert prune.customdata[1][7] == pytest.approx(30.0)  # the hover shows the true accuracy
    assert fig.layout.yaxis.range[0] < floor < 90
    assert any("1 experiment(s) more than 10 pts below" in (a.text or "") for a in fig.layout.annotations)


def _with_interval(record: dict, *, low: float, high: float, mode: str = "full") -> dict:
    ratio = record["latency_ratio"]
    ci = {"ratio": ratio, "low": low, "high": high, "confidence": 0.95, "resamples": 2000, "pairs": 40}
    record["latency"] = {"mode": mode, "batches": {"1": {"ratio_ci": {"candidate": ci}}}}
    return record


def test_latency_ratio_figure_draws_each_interval_as_error_bars_around_one() -> None:
    records = _records()
    _with_interval(records[0], low=0.9, high=1.15, mode="confirmation")  # no measurable difference
    _with_interval(records[3], low=0.25, high=0.36)  # clearly faster
    fig = charts.latency_ratio_figure(experiments_frame(records))
    (trace,) = fig.data
    assert list(trace.x) == pytest.approx([1.0, 1.0, 1.0, 0.3])
    minus, plus = list(trace.error_x.arrayminus), list(trace.error_x.array)
    assert (minus[0], plus[0]) == pytest.approx((0.1, 0.15)) and (minus[3], plus[3]) == pytest.approx((0.05, 0.06))
    verdicts = [row[2] for row in trace.customdata]
    assert verdicts == ["no measurable difference", "no interval recorded", "no interval recorded", "faster"]
    assert any(shape.x0 == 1.0 and shape.x1 == 1.0 for shape in fig.layout.shapes)  # the "same as baseline" line
    assert "95 % interval" in fig.layout.xaxis.title.text


def test_size_axis_of_the_scatter_ticks_at_1_2_5_megabytes() -> None:
    records = _records()
    records[0]["size_bytes"], records[0]["size_fp16_bytes"] = 9_600_000, 9_600_000
    fig = charts.accuracy_size_figure(experiments_frame(records))
    axis = fig.layout.xaxis
    assert axis.type == "log" and list(axis.ticktext) == ["0.2 MB", "0.5 MB", "1 MB", "2 MB", "5 MB", "10 MB"]
    assert all(text.endswith(" MB") for text in axis.ticktext)


def test_best_within_budget_judges_on_validation_images_where_a_run_has_them() -> None:
    records = _records()
    # #4 loses 2 points on the test images but 4 on its validation images: a 2.5-point budget must not pick it by
    # the test images it is reported on; #1 (no validation numbers: a manual run) is judged on its test drop.
    records[3].update(validation_accuracy_top1=0.88, baseline_validation_accuracy_top1=0.92, validation_images=2000)
    frame = experiments_frame(records)
    assert int(charts.best_within_budget(frame, budget_pts=2.5)["id"]) == 1
    assert int(charts.best_within_budget(frame, budget_pts=4.5)["id"]) == 4
