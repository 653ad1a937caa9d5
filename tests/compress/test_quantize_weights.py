"""Weight-only linear quantization: PTQ, GPTQ and QAT leave each channel / block on a 2^bits grid."""

from __future__ import annotations

import pytest
import torch

from core.compress import compress
from core.compress.layers import locate, weight_of
from core.specs import QuantizeWeightsSpec, SpecError
from tests.conftest import assert_unchanged, max_distinct_per_block, max_distinct_per_group, state_snapshot


def _layer(result, name):
    return next(r for r in result.layers if r.name == name)


@pytest.mark.parametrize(("dtype", "levels", "floor_db"), [("int8", 256, 40.0), ("int4", 16, 16.0)])
def test_data_free_per_channel(tiny, fashion, dtype, levels, floor_db):
    snapshot = state_snapshot(tiny.module)
    result = compress(model=tiny, spec=QuantizeWeightsSpec(dtype=dtype, weight_threshold=1000), dataset=fashion)
    assert_unchanged(tiny.module, snapshot)
    for name in ("conv2", "conv3", "conv4", "fc1"):
        report = _layer(result, name)
        assert report.compressed and report.bits == int(dtype[3:]) and report.granularity == "per_channel"
        assert report.n_scales == report.shape[0]
        assert max_distinct_per_group(result.module.get_submodule(name).weight.detach(), 1) <= levels
        assert report.snr_db > floor_db
    assert _layer(result, "conv1").reason.startswith("below weight_threshold")


def test_per_block_asymmetric_and_block_reasons(tiny, fashion):
    spec = QuantizeWeightsSpec(dtype="int4", granularity="per_block", block_size=16, mode="asymmetric", weight_threshold=500)
    result = compress(model=tiny, spec=spec, dataset=fashion)
    conv4 = _layer(result, "conv4")  # 32 input channels → 2 blocks per output channel
    assert conv4.compressed and conv4.granularity == "per_block" and conv4.n_scales == 64 and conv4.n_zero_points == 64
    assert max_distinct_per_block(result.module.conv4.weight.detach(), 16) <= 16
    conv2 = _layer(result, "conv2")  # 8 input channels: nothing to block
    assert not conv2.compressed and "input channels (8) must be larger than and divisible by block_size 16" in conv2.reason
    assert result.weights["conv4"]["zero_point"].numel() == 64


def test_calibration_gptq_uses_calibration_images(tiny, fashion):
    spec = QuantizeWeightsSpec(dtype="int4", workflow="calibration", calibration_samples=32, weight_threshold=1000)
    result = compress(model=tiny, spec=spec, dataset=fashion)
    assert "32 class-balanced images" in result.calibration_source
    for name in ("conv2", "conv3", "conv4", "fc1"):
        report = _layer(result, name)
        assert report.compressed and report.bits == 4
        assert max_distinct_per_group(result.module.get_submodule(name).weight.detach(), 1) <= 16
        assert report.snr_db > 5.0  # GPTQ minimises output error, not weight error
    assert any("GPTQ" in note for note in result.notes)


def test_fine_tune_qat_weight_only(tiny, fashion):
    spec = QuantizeWeightsSpec(dtype="int4", workflow="fine_tune", max_steps=3, batch_size=32, train_limit=128, weight_threshold=1000)
    result = compress(model=tiny, spec=spec, dataset=fashion)
    for name in ("conv2", "conv4", "fc1"):
        report = _layer(result, name)
        assert report.compressed and report.bits == 4
        layer = locate(result.module, name)
        assert max_distinct_per_group(weight_of(layer), 1) <= 16
    # QAT folds BatchNorm into the conv, and the report compares against the folded weight
    assert _layer(result, "conv2").extra["batchnorm_folded"] == "bn2"
    with torch.no_grad():
        out = result.module(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)


def test_fine_tune_per_block_is_rejected_by_the_spec():
    with pytest.raises(SpecError, match="per channel only"):
        QuantizeWeightsSpec(workflow="fine_tune", granularity="per_block")
