"""Magnitude pruning: measured sparsity within 1 % of the target, with the requested structure."""

from __future__ import annotations

import pytest
import torch

from core.compress import CompressionError, compress
from core.specs import PruneSpec
from tests.conftest import assert_unchanged, sparsity, state_snapshot, tiny_model

PRUNED = ("conv2", "conv3", "conv4", "fc1")


def _layer(result, name):
    return next(r for r in result.layers if r.name == name)


@pytest.mark.parametrize("target", [0.3, 0.75])
def test_one_shot_unstructured(tiny, fashion, target):
    snapshot = state_snapshot(tiny.module)
    result = compress(model=tiny, spec=PruneSpec(target_sparsity=target, weight_threshold=1000), dataset=fashion)
    assert_unchanged(tiny.module, snapshot)
    for name in PRUNED:
        weight = result.module.get_submodule(name).weight.detach()
        assert sparsity(weight) == pytest.approx(target, abs=0.01)
        report = _layer(result, name)
        assert report.compressed and report.sparsity == pytest.approx(sparsity(weight))
        # magnitude pruning: every surviving weight is at least as large as every pruned one
        original = tiny.module.get_submodule(name).weight.detach()
        assert original[weight != 0].abs().min() >= original[weight == 0].abs().max() - 1e-7
        assert result.weights[name]["threshold"] == pytest.approx(float(original[weight == 0].abs().max()))
    assert _layer(result, "fc2").reason.startswith("below weight_threshold")


def test_block_structure_zeroes_whole_blocks(tiny, fashion):
    result = compress(model=tiny, spec=PruneSpec(target_sparsity=0.5, structure="block", block_size=4, weight_threshold=1000), dataset=fashion)
    weight = result.module.conv4.weight.detach().flatten(1)  # blocks of 4 along the output channels
    blocks = weight.reshape(8, 4, -1)
    zero_rows = (blocks == 0).all(dim=1)
    assert torch.equal((blocks == 0).any(dim=1), zero_rows)  # a block is either fully zero or untouched
    assert sparsity(weight) == pytest.approx(0.5, abs=0.01)


def test_n_m_structure_and_reason(tiny, fashion):
    result = compress(model=tiny, spec=PruneSpec(structure="n_m", n_m=(2, 4), weight_threshold=500), dataset=fashion)
    weight = result.module.fc1.weight.detach()  # 32 inputs → groups of 4 along the input axis
    assert ((weight.reshape(64, 8, 4) == 0).sum(-1) >= 2).all()
    assert sparsity(weight) == pytest.approx(0.5, abs=0.01)
    # conv2's kernel-position rows hold 8 input channels: divisible by 4, so it is pruned too
    assert _layer(result, "conv2").compressed
    odd = compress(model=tiny, spec=PruneSpec(structure="n_m", n_m=(1, 3), weight_threshold=500), dataset=fashion)
    assert "not divisible by m=3" in _layer(odd, "conv2").reason


@pytest.mark.slow
def test_fine_tune_gradual_schedule_reaches_target(tiny, fashion):
    from core.progress import Progress

    messages: list[str] = []
    spec = PruneSpec(target_sparsity=0.6, workflow="fine_tune", max_steps=8, batch_size=32, train_limit=256, weight_threshold=1000)
    result = compress(model=tiny, spec=spec, dataset=fashion, progress=Progress(lambda f, m: messages.append(m)))
    for name in PRUNED:
        assert sparsity(result.module.get_submodule(name).weight.detach()) == pytest.approx(0.6, abs=0.01)
    assert any("polynomial schedule" in note for note in result.notes)
    assert sum("gradual pruning fine-tuning: step" in m for m in messages) == 8


def test_fine_tune_without_dataset_is_refused():
    with pytest.raises(CompressionError, match="needs labelled training images"):
        compress(model=tiny_model(dataset=None), spec=PruneSpec(workflow="fine_tune"), dataset=None)
