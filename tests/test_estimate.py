"""Run-time estimates: earlier runs win over the size guess, and every workflow adds its own work."""

from __future__ import annotations

import pytest

from core.estimate import baseline_is_quick, estimate_seconds, eval_image_count, forward_ms_per_image
from core.specs import PalettizeSpec, PipelineSpec, PruneSpec, QuantizeWeightsSpec


def test_forward_time_per_image_from_the_largest_batch() -> None:
    baseline = {"latency": {"batches": {"1": {"baseline": {"p50_ms": 2.0}}, "32": {"baseline": {"p50_ms": 16.0}}}}}
    assert forward_ms_per_image(baseline) == pytest.approx(0.5)
    assert forward_ms_per_image({"latency": {}}) is None
    assert forward_ms_per_image({"latency": {"batches": {"8": {"baseline": {"p50_ms": None}}}}}) is None


def test_eval_image_count() -> None:
    assert eval_image_count(limit=500, dataset_size=10_000) == 500
    assert eval_image_count(limit=None, dataset_size=10_000) == 10_000
    assert eval_image_count(limit=2000, dataset_size=300) == 300
    assert eval_image_count(limit=None, dataset_size=None) == 64  # synthetic inputs


def test_history_of_the_same_kind_is_used() -> None:
    history = [
        {"method": "palettize", "workflow": "data_free", "compress_seconds": 10.0},
        {"method": "palettize", "workflow": "data_free", "compress_seconds": 30.0},
        {"method": "palettize", "workflow": "data_free", "compress_seconds": 20.0},
        {"method": "prune", "workflow": "data_free", "compress_seconds": 999.0},
    ]
    with_history, basis = estimate_seconds(params=1_000_000, spec=PalettizeSpec(), eval_images=100, history=history,
                                           forward_ms_per_image=1.0)
    guess, guess_basis = estimate_seconds(params=1_000_000, spec=PalettizeSpec(), eval_images=100, history=[],
                                          forward_ms_per_image=1.0)
    assert "median of 3" in basis and "rough guess" in guess_basis
    assert with_history - guess == pytest.approx(20.0 - (1.0 + 4.0))  # median 20 s replaces 1 + 4 s/M params


def test_calibration_and_fine_tuning_cost_more_than_data_free() -> None:
    common = dict(params=2_000_000, eval_images=500, history=[], forward_ms_per_image=2.0)
    data_free, _ = estimate_seconds(spec=QuantizeWeightsSpec(), **common)
    calibrated, _ = estimate_seconds(spec=QuantizeWeightsSpec(workflow="calibration", calibration_samples=256), **common)
    tuned, _ = estimate_seconds(spec=QuantizeWeightsSpec(workflow="fine_tune", max_steps=100, batch_size=64), **common)
    assert calibrated - data_free == pytest.approx(256 * 0.002 * 4)
    assert tuned - data_free == pytest.approx(100 * 64 * 0.002 * 3)


def test_a_pipeline_sums_its_steps() -> None:
    common = dict(params=1_000_000, eval_images=0, history=[], forward_ms_per_image=1.0)
    pipeline, _ = estimate_seconds(spec=PipelineSpec((PruneSpec(), PalettizeSpec())), **common)
    prune, _ = estimate_seconds(spec=PruneSpec(), **common)
    palettize, _ = estimate_seconds(spec=PalettizeSpec(), **common)
    fixed = 4.0 + 3.0 + 8.0  # export + evaluation overhead, counted once
    assert pipeline - fixed == pytest.approx((prune - fixed) + (palettize - fixed))


def test_quick_baseline_threshold() -> None:
    assert baseline_is_quick(870_000) and not baseline_is_quick(11_700_000)


def test_sensitivity_estimate_grows_with_probes_and_images() -> None:
    from core.estimate import estimate_sensitivity_seconds

    layers = [800, 20_000, 600_000]
    small, basis = estimate_sensitivity_seconds(layer_params=layers, methods=["quantize_weights"], eval_images=100,
                                                params=900_000, forward_ms_per_image=0.2)
    assert basis.startswith("3 probes × 100 images") and "measured by this model's baseline" in basis
    more_probes, _ = estimate_sensitivity_seconds(layer_params=layers, methods=["quantize_weights", "palettize"],
                                                  eval_images=100, params=900_000, forward_ms_per_image=0.2)
    more_images, _ = estimate_sensitivity_seconds(layer_params=layers, methods=["quantize_weights"], eval_images=1000,
                                                  params=900_000, forward_ms_per_image=0.2)
    assert small < more_probes and small < more_images
    guessed, basis = estimate_sensitivity_seconds(layer_params=layers, methods=["palettize"], eval_images=100,
                                                  params=900_000, forward_ms_per_image=None)
    assert guessed > 0 and "rough guess" in basis
