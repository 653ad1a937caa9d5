"""Palettization (coremltools.optimize.torch): every workflow and knob leaves at most 2^n_bits values per LUT group."""

from __future__ import annotations

import pytest
import torch

from core.compress import CompressionError, compress
from core.specs import PalettizeSpec
from tests.conftest import assert_unchanged, max_distinct_per_group, max_distinct_vectors, state_snapshot, tiny_model


def _layer(result, name):
    return next(r for r in result.layers if r.name == name)


def _weight(result, name):
    return result.module.get_submodule(name).weight.detach()


def test_data_free_kmeans_per_tensor(tiny, fashion):
    snapshot = state_snapshot(tiny.module)
    result = compress(model=tiny, spec=PalettizeSpec(n_bits=2, weight_threshold=1000), dataset=fashion)
    assert_unchanged(tiny.module, snapshot)
    names = [r.name for r in result.layers]
    assert names == ["conv1", "conv2", "conv3", "conv4", "fc1", "fc2"]
    conv1 = _layer(result, "conv1")
    assert not conv1.compressed and conv1.reason == "below weight_threshold (72 ≤ 1,000 weights)"
    for name in ("conv2", "conv3", "conv4", "fc1"):
        report = _layer(result, name)
        assert report.compressed and report.method == "palettize"
        assert report.bits == 2 and report.n_luts == 1 and report.lut_entries == 4
        assert max_distinct_per_group(_weight(result, name)) <= 4
        assert report.snr_db > 6.0  # 2-bit k-means on Gaussian-like weights gives ~9-12 dB
        lut = result.weights[name]["lut"]
        assert lut.shape == (1, 4, 1)
        assert set(torch.unique(_weight(result, name)).tolist()) <= set(lut.flatten().tolist())
    assert not _layer(result, "fc2").compressed  # 640 weights


def test_grouped_channels_int8_lut_and_reasons(tiny, fashion):
    spec = PalettizeSpec(n_bits=4, granularity="per_grouped_channel", group_size=16, lut_dtype="int8", weight_threshold=500)
    result = compress(model=tiny, spec=spec, dataset=fashion)
    conv3 = _layer(result, "conv3")  # 32 output channels → 2 LUTs
    assert conv3.compressed and conv3.n_luts == 2 and conv3.lut_bits == 8 and conv3.n_scales == 2
    assert max_distinct_per_group(_weight(result, "conv3"), 16) <= 16
    assert conv3.snr_db > 15.0
    fc2 = _layer(result, "fc2")  # 10 output channels, not divisible by 16
    assert not fc2.compressed and "not divisible by group_size 16" in fc2.reason
    # an int8 LUT: every entry is an integer multiple of its LUT's scale
    lut, scale = result.weights["conv3"]["lut"], result.weights["conv3"]["scale"]
    steps = lut.reshape(2, -1) / scale.reshape(2, 1)
    assert torch.allclose(steps, steps.round(), atol=1e-3)


def test_vector_palettization_and_per_channel_scale(tiny, fashion):
    vector = compress(model=tiny, spec=PalettizeSpec(n_bits=2, cluster_dim=2, weight_threshold=5000), dataset=fashion)
    assert max_distinct_vectors(_weight(vector, "conv4"), 2) <= 4
    assert _layer(vector, "conv4").extra["cluster_dim"] == 2
    scaled = compress(model=tiny, spec=PalettizeSpec(n_bits=3, enable_per_channel_scale=True, weight_threshold=1000), dataset=fashion)
    report = _layer(scaled, "conv4")
    assert report.compressed and report.n_scales == 32 and report.extra["per_channel_scale"]
    # after dividing out the per-channel scale, every channel uses the same 8-entry LUT
    weight = _weight(scaled, "conv4")
    normalised = weight.flatten(1) / scaled.weights["conv4"]["per_channel_scale"].reshape(-1, 1)
    assert torch.unique(normalised.round(decimals=5)).numel() <= 8


def test_uniform_mode_uses_an_evenly_spaced_lut(tiny, fashion):
    result = compress(model=tiny, spec=PalettizeSpec(n_bits=3, mode="uniform", weight_threshold=1000), dataset=fashion)
    weight = _weight(result, "conv4")
    values = torch.unique(weight)
    assert values.numel() <= 8
    lut = result.weights["conv4"]["lut"].flatten()
    gaps = lut[1:] - lut[:-1]
    assert torch.allclose(gaps, gaps[0].expand_as(gaps), rtol=1e-3)
    assert float(lut[0]) == pytest.approx(float(tiny.module.conv4.weight.detach().min()), rel=1e-5)
    assert any("coremltools.optimize.coreml" in note for note in result.notes)


def test_unique_mode_needs_weights_on_a_lattice(fashion):
    model = tiny_model()
    with torch.no_grad():  # put conv4 on a 15-value lattice; leave the others continuous
        weight = model.module.conv4.weight
        step = weight.abs().max() / 7
        weight.copy_((weight / step).round() * step)
    result = compress(model=model, spec=PalettizeSpec(mode="unique", weight_threshold=1000), dataset=fashion)
    conv4 = _layer(result, "conv4")
    assert conv4.compressed and conv4.bits == 4 and conv4.snr_db is None  # lossless: identical weights
    conv3 = _layer(result, "conv3")
    assert not conv3.compressed and "cannot be represented by 8 bits" in conv3.reason


@pytest.mark.slow
def test_calibration_runs_sensitive_kmeans_on_real_images(tiny, fashion):
    spec = PalettizeSpec(n_bits=3, workflow="calibration", calibration_samples=16, weight_threshold=1000)
    result = compress(model=tiny, spec=spec, dataset=fashion)
    assert "Fashion-MNIST" in result.calibration_source and "16" in result.calibration_source
    for name in ("conv2", "conv3", "conv4", "fc1"):
        assert max_distinct_per_group(_weight(result, name)) <= 8
        assert _layer(result, name).extra["workflow"] == "calibration"


def test_calibration_without_dataset_says_synthetic(fashion):
    model = tiny_model(dataset=None)
    result = compress(model=model, spec=PalettizeSpec(workflow="calibration", calibration_samples=8, weight_threshold=1000), dataset=None)
    assert result.calibration_source.startswith("synthetic inputs")
    assert any("synthetic" in note for note in result.notes)


@pytest.mark.slow
def test_fine_tune_dkm_reports_progress_and_keeps_luts(tiny, fashion):
    from core.progress import Progress

    updates: list[tuple[float, str]] = []
    spec = PalettizeSpec(n_bits=2, workflow="fine_tune", max_steps=4, batch_size=32, train_limit=256, weight_threshold=1000)
    result = compress(model=tiny, spec=spec, dataset=fashion, progress=Progress(lambda f, m: updates.append((f, m))))
    assert any("step 4/4" in message for _, message in updates)
    assert [f for f, _ in updates] == sorted(f for f, _ in updates)
    for name in ("conv2", "conv3", "conv4", "fc1"):
        assert max_distinct_per_group(_weight(result, name)) <= 4
    assert any("4 steps" in note for note in result.notes)


def test_fine_tune_without_dataset_is_refused():
    model = tiny_model(dataset=None)
    with pytest.raises(CompressionError, match="no matching dataset"):
        compress(model=model, spec=PalettizeSpec(workflow="fine_tune", max_steps=2), dataset=None)


def test_override_leaves_a_layer_uncompressed_and_changes_bits(tiny, fashion):
    spec = PalettizeSpec(n_bits=4, weight_threshold=1000, overrides={r"^fc1$": None, r"conv4": {"n_bits": 2}})
    result = compress(model=tiny, spec=spec, dataset=fashion)
    fc1 = _layer(result, "fc1")
    assert not fc1.compressed and fc1.reason == "overridden: left uncompressed by override '^fc1$'"
    assert torch.equal(_weight(result, "fc1"), tiny.module.fc1.weight)
    assert _layer(result, "conv4").bits == 2 and _layer(result, "conv3").bits == 4


def test_kmeans_progress_moves_layer_by_layer(tiny, fashion):
    seen: list[tuple[float, str]] = []
    compress(model=tiny, spec=PalettizeSpec(n_bits=2, weight_threshold=1000), dataset=fashion,
             progress=lambda fraction, message: seen.append((fraction, message)))
    per_layer = [(f, m) for f, m in seen if "layers done" in m]
    # conv2, conv3, conv4, fc1: one line per finished layer, driven by the library's own log
    assert [m for _, m in per_layer] == [f"k-means: {i} of 4 layers done" for i in range(1, 5)]
    fractions = [f for f, _ in per_layer]
    assert fractions == sorted(fractions) and 0.05 < fractions[0] < fractions[-1] < 0.96
