"""Lesson 3: LUTs, indices and bits per weight equal what the Compress page's palettization (coremltools) produces."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from core.compress import compress
from core.compress.result import LayerReport
from core.learn.palettization import PaletteSetting, check_fits, palettize, reconstruct, vector_pairs
from core.learn.tensors import toy_tensor
from core.measure.size import layer_storage_bits
from core.specs import PalettizeSpec
from tests.learn.conftest import CONV, LINEAR


@pytest.fixture(scope="module")
def product_run(sample):
    """The Compress page's data-free 2-bit palettization, grouped LUTs of 16 channels, on the whole sample model."""
    spec = PalettizeSpec(n_bits=2, granularity="per_grouped_channel", group_size=16)
    return compress(model=sample, spec=spec, dataset=None)


@pytest.mark.parametrize("name", [CONV, LINEAR])
def test_lesson_equals_the_product_run(product_run, sample, name):
    from core.learn.tensors import layer_weight

    weight = layer_weight(sample.module, name=name)
    result = palettize(weight, PaletteSetting(n_bits=2, granularity="per_grouped_channel", group_size=16))
    product_weight = product_run.module.get_submodule(name).weight.detach().numpy()
    np.testing.assert_array_equal(result.dequantized, product_weight)
    np.testing.assert_array_equal(result.lut, product_run.weights[name]["lut"].numpy())
    report = next(r for r in product_run.layers if r.name == name)
    assert result.n_luts == report.n_luts == weight.shape[0] // 16
    assert result.snr_db == pytest.approx(report.snr_db, rel=1e-9)
    assert result.bits_per_weight() == pytest.approx(sum(layer_storage_bits(report).values()) / weight.size, rel=1e-12)


def test_indices_rebuild_the_weights_exactly(conv_weight):
    for setting in (PaletteSetting(n_bits=4), PaletteSetting(n_bits=3, per_channel_scale=True),
                    PaletteSetting(n_bits=2, granularity="per_grouped_channel", group_size=8)):
        result = palettize(conv_weight, setting)
        assert result.indices.shape == conv_weight.shape
        assert result.indices.min() >= 0 and result.indices.max() < setting.entries
        np.testing.assert_allclose(reconstruct(result), result.dequantized, rtol=1e-6, atol=0)
        assert len(np.unique(result.dequantized[:8])) <= setting.entries * (8 if setting.per_channel_scale else 1)


def test_more_bits_more_snr_and_lut_overhead_on_small_layers(conv_weight):
    snrs = [palettize(conv_weight, PaletteSetting(n_bits=b)).snr_db for b in (1, 2, 3, 4, 6)]
    assert all(b > a for a, b in itertools.pairwise(snrs)), snrs
    toy = palettize(toy_tensor(), PaletteSetting(n_bits=4))
    assert toy.bits_per_weight() == pytest.approx(4 + 16 * 16 / 128)  # the LUT is half the storage of 128 weights


def test_per_channel_scale_is_each_channels_largest_magnitude(conv_weight):
    result = palettize(conv_weight, PaletteSetting(n_bits=4, per_channel_scale=True))
    expected = np.abs(conv_weight).reshape(64, -1).max(axis=1)
    np.testing.assert_allclose(result.channel_scale, expected, rtol=1e-6)
    assert np.abs(result.lut).max() <= 1.0 + 1e-6  # LUT values are in channel-normalised units
    report = LayerReport(name=CONV, type="Conv2d", shape=conv_weight.shape, params=conv_weight.size, compressed=True,
                         method="palettize", bits=4, n_luts=1, lut_entries=16, n_scales=64)
    assert sum(result.storage_bits().values()) == sum(layer_storage_bits(report).values())


def test_vector_palettization_on_the_hand_made_tensor():
    toy = toy_tensor()
    result = palettize(toy, PaletteSetting(n_bits=3, cluster_dim=2))
    assert result.lut.shape == (1, 8, 2)
    assert result.indices.shape == (4, 16)  # one index per pair of output channels
    np.testing.assert_allclose(reconstruct(result), result.dequantized, rtol=1e-6)
    assert result.bits_per_weight() == pytest.approx(3 / 2 + 8 * 2 * 16 / 128)
    pairs, labels = vector_pairs(toy, result)
    assert pairs.shape == (64, 2) and labels.shape == (64,)
    np.testing.assert_array_equal(pairs[0], toy[0:2, 0])


def test_a_setting_that_does_not_fit_is_explained(conv_weight):
    assert check_fits((10, 256), PaletteSetting(granularity="per_grouped_channel", group_size=4)) is not None
    with pytest.raises(ValueError, match="not divisible by group size 5"):
        palettize(conv_weight, PaletteSetting(granularity="per_grouped_channel", group_size=5))
    with pytest.raises(ValueError, match="up to 4 bits"):
        PaletteSetting(n_bits=8, cluster_dim=2)
    assert torch.get_num_threads() <= 2
