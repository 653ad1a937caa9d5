"""Tabular views of records: the experiments frame and table, per-class and per-layer frames, the diff, flips."""

from __future__ import annotations

import pandas as pd
import pytest

from core.compress.registry import method_label
from core.metrics import metric
from core.tables import (
    ARTIFACT_MATCH_HEADER,
    EXPERIMENTS_TABLE_METRICS,
    diff_frame,
    diff_verdict,
    experiments_csv,
    experiments_frame,
    experiments_table,
    experiments_table_formats,
    flip_kind,
    flipped_frame,
    layers_frame,
    per_class_frame,
)
from tests.conftest import make_record


def test_frames() -> None:
    records = [dict(make_record(accuracy=0.9), id=1), dict(make_record(method="prune", accuracy=0.85), id=2)]
    frame = experiments_frame(records)
    assert list(frame["id"]) == [1, 2]
    assert frame.loc[0, "accuracy_delta_pts"] == pytest.approx(-2.0)
    assert frame.loc[1, "accuracy_delta_pts"] == pytest.approx(-7.0)
    assert frame.loc[0, "breakdown_luts"] == 2000
    assert frame.loc[0, "label"] == "#1 4-bit palettization, data-free"
    assert experiments_frame([]).empty

    per_class = per_class_frame(records)
    assert len(per_class) == 20
    last = per_class[(per_class["id"] == 1) & (per_class["class_index"] == 9)].iloc[0]
    assert last["delta_pts"] == pytest.approx(-12.0)
    assert last["class_name"] == "class9"

    csv_rows = experiments_csv(records).strip().splitlines()
    assert len(csv_rows) == 3


def test_layers_frame_bits_per_weight() -> None:
    layers = layers_frame(make_record())
    uncompressed, palettized = layers.iloc[0], layers.iloc[1]
    assert uncompressed["bits_per_weight"] == 16.0
    assert "weight_threshold" in uncompressed["reason"]
    # 4-bit indices + one fp16 LUT of 16 entries spread over 802,816 weights.
    assert palettized["bits_per_weight"] == pytest.approx(4 + 16 * 16 / 802816)
    assert palettized["shape"] == "256×3136"


def test_diff_frame() -> None:
    a = dict(make_record(accuracy=0.90, size=400_000), id=1)
    b = dict(make_record(accuracy=0.88, size=200_000), id=2)
    b["spec"] = {"method": "palettize", "workflow": "data_free", "n_bits": 3, "overrides": {}}
    diff = diff_frame(a, b).set_index("what")
    assert diff.loc["top-1 accuracy", "B − A"] == pytest.approx(-0.02)
    assert diff.loc["top-1 accuracy", ""] == "A better"
    assert diff.loc["artifact size (bytes)", ""] == "B better"
    assert diff.loc["spec · n_bits", "A"] == 4 and diff.loc["spec · n_bits", "B"] == 3
    assert "spec · workflow" not in diff.index


def test_experiments_table_numbers_and_text() -> None:
    records = [dict(make_record(accuracy=0.9, size=400_000), id=1), dict(make_record(method="prune", accuracy=0.85), id=2)]
    frame = experiments_frame(records)
    table = experiments_table(frame)
    assert list(table.columns[:3]) == ["#", "method", "setting"] and table.columns[-1] == "created"
    assert list(table["#"]) == [1, 2] and list(table["method"]) == [method_label("palettize"), method_label("prune")]
    assert table.loc[0, "top-1 %"] == pytest.approx(90.0) and table.loc[0, "size MB"] == pytest.approx(0.4)
    assert table.loc[1, "Δ pts"] == pytest.approx(-7.0) and table.loc[0, "created"] == "2025-01-01 12:00:00"
    assert pd.api.types.is_numeric_dtype(table["top-1 %"])
    text = experiments_table(frame, formatted=True)
    assert text.loc[0, "top-1 accuracy"] == "90.00 %" and text.loc[0, "artifact size"] == "400.00 kB"
    assert text.loc[0, "compression vs fp16"] == "4.00× smaller" and text.loc[1, "accuracy change"] == "-7.00 pts"
    assert table.loc[0, "size vs fp16"] == "4.00× smaller"  # text: a ratio below 1 must read "larger"
    formats = experiments_table_formats()
    assert set(formats) < {m.column_header for m in EXPERIMENTS_TABLE_METRICS} <= set(table.columns)
    assert "size vs fp16" not in formats and "latency vs baseline" not in formats
    assert formats["size MB"] == ("%.3f", metric("size_bytes").description)


def test_experiments_table_says_whether_the_artifact_holds_the_evaluated_weights() -> None:
    records = [dict(make_record(), id=i, artifact_weights_match=match) for i, match in enumerate((True, False, None))]
    for formatted in (False, True):
        table = experiments_table(experiments_frame(records), formatted=formatted)
        assert list(table[ARTIFACT_MATCH_HEADER]) == ["yes", "MISMATCH", "not checked"]
        assert table.columns[-1] == "created"


def test_experiments_table_of_nothing_and_of_missing_numbers() -> None:
    assert experiments_table(experiments_frame([])).empty
    record = dict(make_record(), id=3)
    record["latency_ms_p50"] = None
    table = experiments_table(experiments_frame([record]), formatted=True)
    assert table.loc[0, "latency p50"] == "not timed"
    sortable = experiments_table(experiments_frame([record, dict(make_record(), id=4)]))
    assert list(sortable["latency ms"]) == ["not timed", "1.00 ms"]  # never a cell reading None
    assert pd.api.types.is_numeric_dtype(sortable["size MB"])  # complete columns stay sortable numbers


def test_a_size_ratio_below_one_reads_larger_and_latency_ratios_carry_their_interval() -> None:
    dynamic = dict(make_record(method="torch_dynamic", size=3_200_000), id=5)  # twice the fp16 package
    tie = dict(make_record(latency=1.22), id=6)
    tie["latency"] = {"mode": "confirmation", "batches": {"1": {"ratio_ci": {"candidate": {
        "ratio": 1.22, "low": 0.91, "high": 1.40, "confidence": 0.95, "resamples": 2000, "pairs": 6}}}}}
    fast = dict(make_record(latency=0.5), id=7)
    fast["latency"] = {"mode": "full", "batches": {"1": {"ratio_ci": {"candidate": {
        "ratio": 0.5, "low": 0.46, "high": 0.55, "confidence": 0.95, "resamples": 2000, "pairs": 60}}}}}
    table = experiments_table(experiments_frame([dynamic, tie, fast]))
    assert table.loc[0, "size vs fp16"] == "2.00× larger"
    assert list(table["latency vs baseline"]) == [
        "1.00× (no interval recorded)", "no measurable difference (±40 %)", "0.50× (95 % CI 0.46–0.55×)"]


def test_readable_table_and_diff_table_use_plain_words() -> None:
    from core.tables import diff_table, flipped_table, readable_table

    raw = pd.DataFrame({"spec_summary": ["a", "b"], "parent_experiment_id": [None, 3.0], "size_bytes": [1e6, 2e6],
                        "probe_snr_db": [12.5, float("nan")]})
    table = readable_table(raw, formats={"size_bytes": lambda v: f"{v / 1e6:.0f} MB"})
    assert list(table.columns) == ["setting", "refines #", "size", "output SNR alone"]
    assert list(table["refines #"]) == ["—", "3"] and list(table["size"]) == ["1 MB", "2 MB"]
    assert list(table["output SNR alone"]) == ["12.5", "—"]
    a, b = dict(make_record(), id=1), dict(make_record(method="prune", accuracy=0.85), id=2)
    b["latency_ms_p50"] = None
    diff = diff_table(a, b).set_index("what")
    assert diff.loc["latency p50", "B"] == "—" and diff.loc["latency p50", "B − A"] == "—"
    assert diff.loc["top-1 accuracy", "B − A"] == "-5.00 pts" and diff.loc["artifact size", "A"] == "400.00 kB"
    flipped = flipped_table(a)
    assert list(flipped.columns) == ["image", "change", "true class", "before", "after"]
    assert list(flipped["true class"]) == ["class1", "class0"]


def test_diff_verdict_follows_the_better_direction() -> None:
    assert diff_verdict(metric("size_bytes"), 2, 1) == "B better"
    assert diff_verdict(metric("accuracy_top1"), 0.9, 0.8) == "A better"
    assert diff_verdict(metric("eval_images"), 100, 200) == ""  # neither direction is better
    assert diff_verdict(metric("accuracy_top1"), None, 0.8) == ""


def test_flipped_predictions_by_kind() -> None:
    record = make_record()
    record["flipped_images"].append({"index": 9, "true": 4, "before": 2, "after": 3})
    assert [flip_kind(f) for f in record["flipped_images"]] == ["broken", "fixed", "still wrong"]
    frame = flipped_frame(record)
    assert list(frame["mark"]) == ["✓→✗", "✗→✓", "✗→✗"]
    assert frame.loc[0, "before_name"] == "class1" and frame.loc[0, "after_name"] == "class2"
    assert list(flipped_frame(record, kind="fixed")["index"]) == [7]
    assert flipped_frame(make_record() | {"flipped_images": []}).empty
    with pytest.raises(ValueError, match="kind must be"):
        flipped_frame(record, kind="worse")


def test_a_same_computation_run_never_reads_as_a_speed_up_in_the_table() -> None:
    same = dict(make_record(latency=0.94), id=8)
    same["latency"] = {"mode": "confirmation", "batches": {"1": {"ratio_ci": {"candidate": {
        "ratio": 0.94, "low": 0.85, "high": 0.997, "confidence": 0.95, "resamples": 2000, "pairs": 6}}}}}
    table = experiments_table(experiments_frame([same]))
    assert list(table["latency vs baseline"]) == ["same computation (-6 % load)"]
