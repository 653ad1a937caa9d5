"""Lessons 1–2: scales, zero-points and quantized weights equal coremltools' PostTrainingQuantizer and torch.ao."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from coremltools.optimize.torch.quantization import (
    ModulePostTrainingQuantizerConfig,
    PostTrainingQuantizer,
    PostTrainingQuantizerConfig,
)

from core.compress.result import LayerReport
from core.learn.quantization import LinearSetting, block_sizes_for, engine_for, linear_quantize, staircase, with_outlier
from core.learn.tensors import toy_tensor
from core.measure.quality import snr_db
from core.measure.size import layer_storage_bits
from tests.learn.conftest import CONV


def _coremltools_run(sample, name: str, *, bits: int, symmetric: bool, granularity: str, block: int | None):
    """The layer after coremltools' PostTrainingQuantizer: (weights, scale, zero-point or None)."""
    layer = copy.deepcopy(sample.module.get_submodule(name))
    config = ModulePostTrainingQuantizerConfig(
        weight_dtype=f"int{bits}", granularity=granularity, block_size=block,
        quantization_scheme="symmetric" if symmetric else "affine",
    )
    module = PostTrainingQuantizer(torch.nn.Sequential(layer), PostTrainingQuantizerConfig(global_config=config)).compress()
    buffers = {k.rsplit("/", 1)[-1]: v for k, v in module[0]._buffers.items() if k.startswith("_COREML_")}
    zero = buffers.get("zero_point")
    return module[0].weight.detach().numpy(), buffers["quantization_scale"].numpy(), None if zero is None else zero.numpy()


@pytest.mark.parametrize("granularity,block", [("per_tensor", None), ("per_channel", None), ("per_block", 16)])
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_equals_coremltools_post_training_quantizer(sample, conv_weight, granularity, block, bits, symmetric):
    result = linear_quantize(conv_weight, LinearSetting(bits=bits, symmetric=symmetric, granularity=granularity,
                                                        block_size=block or 32))
    weights, scale, zero = _coremltools_run(sample, CONV, bits=bits, symmetric=symmetric, granularity=granularity,
                                            block=block)
    assert engine_for(bits) == "coremltools"
    np.testing.assert_array_equal(result.dequantized, weights)
    np.testing.assert_array_equal(result.scale, scale.reshape(result.scale.shape))
    if symmetric:
        assert zero is None and not result.zero_point.any()
    else:
        np.testing.assert_array_equal(result.zero_point, zero.reshape(result.zero_point.shape))
    expected_scales = {"per_tensor": 1, "per_channel": 64, "per_block": 64 * 4}[granularity]
    assert result.n_scales == expected_scales
    assert result.snr_db == pytest.approx(snr_db(reference=torch.from_numpy(conv_weight), candidate=torch.from_numpy(weights)), rel=1e-9)


@pytest.mark.parametrize("bits", [2, 3, 5, 6, 7])
@pytest.mark.parametrize("symmetric", [True, False])
def test_other_widths_equal_torch_quantize_per_tensor(conv_weight, bits, symmetric):
    """Widths coremltools' linear quantizer lacks come from torch.ao; the codes are torch.quantize_per_tensor's."""
    result = linear_quantize(conv_weight, LinearSetting(bits=bits, symmetric=symmetric))
    assert engine_for(bits) == "torch.ao"
    low, high = result.setting.quant_range
    assert result.levels == high - low + 1 == (2**bits - 1 if symmetric else 2**bits)
    observer = torch.ao.quantization.MinMaxObserver(
        dtype=torch.qint8, quant_min=low, quant_max=high,
        qscheme=torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine,
    )
    observer(torch.from_numpy(conv_weight))
    scale, zero = observer.calculate_qparams()
    assert float(result.scale.ravel()[0]) == float(scale) and int(result.zero_point.ravel()[0]) == int(zero)
    quantized = torch.quantize_per_tensor(torch.from_numpy(conv_weight), float(scale), int(zero), torch.qint8)
    np.testing.assert_array_equal(result.codes, quantized.int_repr().numpy())
    np.testing.assert_array_equal(result.dequantized, quantized.dequantize().numpy())
    assert result.codes.min() >= low and result.codes.max() <= high


def test_per_channel_other_width_equals_torch_quantize_per_channel(conv_weight):
    result = linear_quantize(conv_weight, LinearSetting(bits=3, symmetric=False, granularity="per_channel"))
    scale = torch.from_numpy(result.scale.ravel().astype(np.float64))
    zero = torch.from_numpy(result.zero_point.ravel().astype(np.int64))
    quantized = torch.quantize_per_channel(torch.from_numpy(conv_weight), scale, zero, 0, torch.qint8)
    np.testing.assert_array_equal(result.codes, quantized.int_repr().numpy())
    np.testing.assert_allclose(result.dequantized, quantized.dequantize().numpy(), rtol=0, atol=1e-7)


def test_each_extra_bit_adds_about_six_db(conv_weight):
    snrs = [linear_quantize(conv_weight, LinearSetting(bits=b)).snr_db for b in (4, 5, 6, 7, 8)]
    steps = np.diff(snrs)
    assert np.all(steps > 4.5) and np.all(steps < 7.5), snrs


def test_percentile_clip_trades_rounding_for_clipping_error(linear_weight):
    full = linear_quantize(linear_weight, LinearSetting(bits=4))
    clipped = linear_quantize(linear_weight, LinearSetting(bits=4, clip_percentile=99.9))
    assert full.clipping_mse == 0 and not full.clipped.any()
    assert clipped.clipping_mse > 0
    assert clipped.rounding_mse < full.rounding_mse
    assert float(clipped.scale.ravel()[0]) < float(full.scale.ravel()[0])
    share = clipped.clipped.mean()
    assert 0.001 <= share <= 0.0025  # 0.1 % per tail, symmetric mode widens the range to the larger tail
    low, high = clipped.setting.quant_range
    assert set(np.unique(clipped.codes[clipped.clipped])) <= {low, high}
    # the error parts add up to the total, and the SNR is the library's
    total = float(((linear_weight.astype(np.float64) - clipped.dequantized) ** 2).mean())
    assert clipped.rounding_mse + clipped.clipping_mse == pytest.approx(total, rel=1e-9)


def test_percentile_clip_equals_coremltools_on_clipped_weights(linear_weight):
    """The lesson's clip = clip the weights, then coremltools' min/max quantizer (what a clipped layer would store)."""
    from coremltools.optimize._utils import compute_qparams

    result = linear_quantize(linear_weight, LinearSetting(bits=8, symmetric=False, clip_percentile=99.0))
    low, high = np.percentile(linear_weight, [1.0, 99.0])
    codes, scale, zero = compute_qparams(np.clip(linear_weight, low, high).astype(np.float32), nbits=8, signed=True,
                                         quantization_mode="LINEAR", dtype=np.int8, block_sizes=[0, 0])
    assert float(result.scale.ravel()[0]) == float(np.ravel(scale)[0])
    assert int(result.zero_point.ravel()[0]) == int(np.ravel(zero)[0])
    np.testing.assert_array_equal(result.codes, codes)


def test_outlier_channel_inflates_only_the_per_tensor_scale(conv_weight):
    base = {g: linear_quantize(conv_weight, LinearSetting(bits=4, granularity=g)) for g in ("per_tensor", "per_channel")}
    bent = with_outlier(conv_weight, channel=5, factor=16.0)
    out = {g: linear_quantize(bent, LinearSetting(bits=4, granularity=g)) for g in ("per_tensor", "per_channel")}
    assert float(out["per_tensor"].scale.ravel()[0]) > 3 * float(base["per_tensor"].scale.ravel()[0])
    others = np.arange(64) != 5
    np.testing.assert_array_equal(out["per_channel"].scale.ravel()[others], base["per_channel"].scale.ravel()[others])
    per_tensor_drop = base["per_tensor"].channel_snr_db(conv_weight)[others] - out["per_tensor"].channel_snr_db(bent)[others]
    assert np.median(per_tensor_drop) > 6.0  # every other channel lost more than a bit's worth
    assert not np.shares_memory(bent, conv_weight)


def test_storage_bits_match_the_size_model(conv_weight):
    for granularity, symmetric in (("per_channel", True), ("per_block", False)):
        result = linear_quantize(conv_weight, LinearSetting(bits=4, symmetric=symmetric, granularity=granularity, block_size=16))
        report = LayerReport(name=CONV, type="Conv2d", shape=conv_weight.shape, params=conv_weight.size, compressed=True,
                             method="quantize_weights", bits=4, n_scales=result.n_scales,
                             n_zero_points=0 if symmetric else result.n_scales)
        expected = {k: v for k, v in layer_storage_bits(report).items() if v}
        assert {k: v for k, v in result.storage_bits().items() if v} == expected


def test_staircase_and_grid_on_the_hand_made_tensor():
    toy = toy_tensor()
    result = linear_quantize(toy, LinearSetting(bits=3, symmetric=True))
    grid = result.grid()
    assert len(grid) == 7 and grid[3] == 0.0
    assert set(np.unique(result.dequantized)) <= set(grid.tolist())
    _x, y = staircase(result, low=float(toy.min()), high=float(toy.max()))
    assert set(np.unique(y)) <= set(grid.tolist())
    assert np.all(np.diff(y) >= 0)


def test_block_sizes_and_bad_settings_name_the_problem(conv_weight):
    assert block_sizes_for(64) == [4, 8, 16, 32]
    with pytest.raises(ValueError, match="bits"):
        LinearSetting(bits=9)
    with pytest.raises(ValueError, match="not divisible by block size 5"):
        linear_quantize(conv_weight, LinearSetting(granularity="per_block", block_size=5))
