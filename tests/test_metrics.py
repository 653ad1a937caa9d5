"""Declared metrics: every number a table, diff, report, CLI or bench shows is declared, and formats as declared."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core import tables
from core.metrics import METRICS, UNITS, Metric, format_metric, metric, metrics_in, recorded_metrics

ROOT = Path(__file__).resolve().parent.parent


def test_every_numeric_table_column_is_declared() -> None:
    numeric = [c for c in tables.TABLE_COLUMNS if c not in tables.TEXT_COLUMNS and c != "id"]
    assert numeric  # the table has measured columns at all
    for column in numeric:
        assert metric(column).key == column


def test_diff_and_experiments_table_use_declarations() -> None:
    assert all(isinstance(m, Metric) for m in (*tables.DIFF_METRICS, *tables.EXPERIMENTS_TABLE_METRICS))
    assert [m.key for m in tables.DIFF_METRICS][:3] == ["accuracy_top1", "accuracy_top5", "agreement_top1"]


def _format_metric_keys(path: Path) -> set[str]:
    """The metric keys a module passes to format_metric(...) as string literals."""
    keys = set()
    for node in ast.walk(ast.parse(path.read_text())):
        called = getattr(node.func, "id", getattr(node.func, "attr", "")) if isinstance(node, ast.Call) else ""
        if called in ("format_metric", "shown") and node.args and isinstance(node.args[0], ast.Constant):
            keys.add(str(node.args[0].value))
    return keys


@pytest.mark.parametrize("module", ["core/cli.py", "core/report.py", "bench/fashion_table.py", "bench/torchvision_table.py"])
def test_cli_report_and_bench_format_declared_metrics(module: str) -> None:
    keys = _format_metric_keys(ROOT / module)
    assert keys, f"{module} formats no declared metric"
    for key in keys:
        metric(key)  # KeyError names the undeclared one


def test_unknown_metric_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="declared: accuracy_top1"):
        metric("accuracy")


def test_declarations_are_complete_and_unique() -> None:
    assert len({m.key for m in METRICS}) == len(METRICS)
    for declared in METRICS:
        assert declared.unit in UNITS and declared.better in (-1, 0, 1)
        assert declared.label and declared.description.endswith((".", ")")), declared.key
        assert declared.column_header


def test_bad_declarations_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown unit 'furlongs'"):
        Metric("x", "x", "furlongs", 1, "x")
    with pytest.raises(ValueError, match="better must be"):
        Metric("x", "x", "ms", 2, "x")


@pytest.mark.parametrize(
    ("key", "value", "text"),
    [
        ("accuracy_top1", 0.9336, "93.36 %"),
        ("accuracy_delta_pts", -0.77, "-0.77 pts"),
        ("size_bytes", 1_234_567, "1.23 MB"),
        ("latency_ms_p50", 1.2345, "1.23 ms"),
        ("compression_ratio_fp16", 3.987, "3.99× smaller"),
        ("compression_ratio_fp16", 0.5, "2.00× larger"),
        ("output_snr_db", 25.04, "25.0 dB"),
        ("compress_seconds", 75, "1 min 15 s"),
        ("flipped", 1234, "1,234"),
        ("bits_per_weight", 4.1, "4.10 bits"),
        ("accuracy_top1", None, "n/a"),
        ("output_snr_db", float("inf"), "n/a"),
    ],
)
def test_formats(key: str, value: object, text: str) -> None:
    assert format_metric(key, value) == text


def test_table_values_and_labels() -> None:
    size = metric("size_bytes")
    assert size.column_value(1_500_000) == pytest.approx(1.5) and size.column_format == "%.3f"
    assert metric("accuracy_top1").column_value(0.9) == pytest.approx(90.0)
    assert metric("accuracy_top1").column_value("n/a") is None
    assert size.label_with_unit == "artifact size (bytes)"
    assert metric("bits_per_weight").label_with_unit == "bits per weight"


def test_a_metric_declared_with_a_view_appears_in_every_table_of_that_view(monkeypatch) -> None:
    """Adding a metric is its measure function, its record value and its declaration: the experiments frame,
    Compare's and the report's table, the diff and the CLI's results table follow the declaration."""
    import pandas as pd

    from core import metrics
    from core.explore.cli import results_table

    extra = Metric("demo_score", "demo score", "dB", 1, "A metric declared for this test.", "demo dB",
                   views=frozenset({"compare", "report", "diff", "cli", "bench"}))
    monkeypatch.setattr(metrics, "METRICS", (*metrics.METRICS, extra))
    monkeypatch.setattr(metrics, "METRICS_BY_KEY", {**metrics.METRICS_BY_KEY, "demo_score": extra})
    frame = tables.experiments_frame([{"id": 1, "method": "palettize", "spec_summary": "4-bit",
                                       "created_at": "2026-01-01T00:00:00", "demo_score": 12.5}])
    assert frame.loc[0, "demo_score"] == 12.5
    for view in ("compare", "report"):
        assert tables.experiments_table(frame, formatted=True, view=view).loc[0, "demo score"] == "12.5 dB"
    assert tables.experiments_table(frame).loc[0, "demo dB"] == 12.5
    diff = tables.diff_table({"demo_score": 10.0}, {"demo_score": 12.5}).set_index("what")
    assert diff.loc["demo score", "B"] == "12.5 dB" and diff.loc["demo score", ""] == "B better"
    text = results_table(pd.DataFrame([{"config": 1, "spec_summary": "4-bit", "demo_score": 12.5}]))
    assert "demo score" in text and "12.5 dB" in text


def test_the_record_schema_takes_the_declared_metrics() -> None:
    from core.records import BASELINE_FIELDS, EXPERIMENT_FIELDS

    for kind, fields in (("experiment", EXPERIMENT_FIELDS), ("baseline", BASELINE_FIELDS)):
        for declared in recorded_metrics(kind):
            assert fields[declared.key] == declared.description, (kind, declared.key)
    assert "accuracy_delta_pts" not in EXPERIMENT_FIELDS  # derived by the experiments frame, not recorded
    assert "peak_memory_bytes" in BASELINE_FIELDS and "baseline_peak_memory_bytes" not in BASELINE_FIELDS
    assert [c for c in tables.TABLE_COLUMNS if c in {m.key for m in METRICS}] == [m.key for m in METRICS]


def test_views_and_records_are_declared_by_name() -> None:
    with pytest.raises(ValueError, match="views"):
        Metric("x", "x", "dB", 1, "x", views=frozenset({"sidebar"}))
    with pytest.raises(ValueError, match="records"):
        Metric("x", "x", "dB", 1, "x", records=frozenset({"run"}))
    with pytest.raises(ValueError, match="no view"):
        metrics_in("sidebar")
    assert [m.key for m in metrics_in("compare")] == [m.key for m in METRICS if "compare" in m.views]
    assert "output_psnr_db" in {m.key for m in metrics_in("compare")}  # declared, recorded, and now shown
    assert {m.key for m in recorded_metrics("baseline")} <= {m.key for m in recorded_metrics("experiment")}
