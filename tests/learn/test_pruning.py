"""Lesson 4: masks equal coremltools' MagnitudePruner (and the Compress page's prune run); storage follows the size model."""

from __future__ import annotations

import numpy as np
import pytest
from coremltools.optimize.torch.pruning import (
    ConstantSparsityScheduler,
    MagnitudePruner,
    MagnitudePrunerConfig,
    ModuleMagnitudePrunerConfig,
)

from core.compress import compress
from core.compress.result import LayerReport
from core.learn.palettization import one_layer_module
from core.learn.pruning import PruneSetting, check_fits, prune, sparsity_curve
from core.measure.size import layer_storage_bits
from core.specs import PruneSpec
from tests.learn.conftest import CONV


def _magnitude_pruner(weight: np.ndarray, setting: PruneSetting) -> np.ndarray:
    scheduler = ConstantSparsityScheduler(begin_step=0)
    if setting.structure == "n_m":
        config = ModuleMagnitudePrunerConfig(scheduler=scheduler, n_m_ratio=(setting.n, setting.m), dim=1)
    else:
        config = ModuleMagnitudePrunerConfig(scheduler=scheduler, target_sparsity=setting.sparsity,
                                             block_size=setting.block_size if setting.structure == "block" else 1)
    pruner = MagnitudePruner(one_layer_module(weight), MagnitudePrunerConfig(global_config=config))
    pruner.prepare(inplace=True)
    pruner.step()
    return pruner.finalize(inplace=True)[0].weight.detach().numpy()


@pytest.mark.parametrize("setting", [
    PruneSetting(sparsity=0.3), PruneSetting(sparsity=0.9), PruneSetting(structure="block", sparsity=0.5, block_size=4),
    PruneSetting(structure="n_m", n=2, m=4), PruneSetting(structure="n_m", n=6, m=8),
], ids=lambda s: f"{s.structure}-{s.target_sparsity}")
def test_masks_equal_magnitude_pruner(conv_weight, setting):
    result = prune(conv_weight, setting)
    np.testing.assert_array_equal(result.pruned, _magnitude_pruner(conv_weight, setting))
    assert result.sparsity == pytest.approx(setting.target_sparsity, abs=0.01)


def test_equals_the_compress_page_run(sample, linear_weight):
    run = compress(model=sample, spec=PruneSpec(target_sparsity=0.75), dataset=None)
    result = prune(linear_weight, PruneSetting(sparsity=0.75))
    np.testing.assert_array_equal(result.pruned, run.module.get_submodule("classifier.1").weight.detach().numpy())
    report = next(r for r in run.layers if r.name == "classifier.1")
    assert result.sparsity == pytest.approx(report.sparsity)
    assert result.snr_db == pytest.approx(report.snr_db, rel=1e-9)
    assert sum(result.storage_bits().values()) == sum(layer_storage_bits(report).values())


def test_threshold_separates_kept_from_pruned(conv_weight):
    result = prune(conv_weight, PruneSetting(sparsity=0.6))
    kept = np.abs(conv_weight[result.mask])
    gone = np.abs(conv_weight[~result.mask])
    assert kept.min() == result.threshold and gone.max() <= result.threshold


def test_patterns_have_their_shape(conv_weight):
    blocks = prune(conv_weight, PruneSetting(structure="block", sparsity=0.5, block_size=4)).mask
    assert (blocks.reshape(16, 4, -1) == blocks.reshape(16, 4, -1)[:, :1]).all()  # 4 output channels share the mask
    nm = prune(conv_weight, PruneSetting(structure="n_m", n=2, m=4)).mask
    kept_per_group = np.moveaxis(nm, 1, -1).reshape(-1, 4).sum(axis=1)
    assert (kept_per_group == 2).all()


@pytest.mark.slow
def test_sparsity_curve_falls_and_storage_pays_off_late(conv_weight):
    sparsities, snrs = sparsity_curve(conv_weight, structure="unstructured")
    assert sparsities[0] == 0.05 and sparsities[-1] == 0.95
    assert np.all(np.diff(snrs) < 0)
    block = sparsity_curve(conv_weight, structure="block", block_size=4)[1]
    assert np.all(block <= snrs + 1e-9)  # structure costs SNR at every sparsity
    half = prune(conv_weight, PruneSetting(sparsity=0.5))
    assert half.bits_per_weight() == pytest.approx(1 + 16 * 0.5, abs=0.01)
    report = LayerReport(name=CONV, type="Conv2d", shape=conv_weight.shape, params=conv_weight.size, compressed=True,
                         method="prune", bits=16, sparsity=half.sparsity)
    assert sum(half.storage_bits().values()) == sum(layer_storage_bits(report).values())


def test_settings_the_pruner_skips_are_explained():
    assert "exceeds half" in check_fits((4, 16), PruneSetting(structure="block", block_size=4))
    assert "not divisible by m = 8" in check_fits((64, 12, 3, 3), PruneSetting(structure="n_m", n=2, m=8))
    with pytest.raises(ValueError, match="smaller than m"):
        PruneSetting(structure="n_m", n=4, m=4)
