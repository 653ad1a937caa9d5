"""Accuracy-budget search over existing records, its sentence, and the layer-skip refinement it runs."""

from __future__ import annotations

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


def _record(id_: int, spec: dict, *, acc: float, size: int, latency: float | None = None, layers=None) -> dict:
    normalised = spec_from_dict(spec)
    return {
        "id": id_, "kind": "experiment", "spec": normalised.to_dict(), "spec_summary": normalised.summary(),
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
    assert "within 1 points" in result.sentence and "6.7× smaller, −0.5 points" in result.sentence
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
    refined = {**RECORDS[2], "id": 9, "spec": specs[1], "accuracy_top1": 0.912, "size_bytes": 400_000}
    assert "palettize 2-bit (data_free) + 2 per-layer override(s)" in pick_winner(
        [*RECORDS, refined], goal=SearchGoal(max_drop_pts=1.0)).sentence
    spec = spec_from_dict(specs[1])
    assert spec.resolve("stem").n_bits == 4 and spec.resolve("body").n_bits == 2  # overrides round-trip


def test_missing_configs_skips_what_the_model_already_has() -> None:
    wanted = [{"method": "palettize", "n_bits": 4}, {"method": "palettize", "n_bits": 3}]
    assert missing_configs(configs=wanted, records=RECORDS) == [{"method": "palettize", "n_bits": 3}]
    assert candidates_frame([], goal=SearchGoal()).empty
