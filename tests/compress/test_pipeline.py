"""Joint pipelines keep the pruning mask through the second step and say so in the metadata ct.convert reads."""

from __future__ import annotations

import pytest
import torch

from core.compress import compress
from core.compress.layers import compression_types, read_metadata
from core.specs import PalettizeSpec, PipelineSpec, PruneSpec, QuantizeWeightsSpec, SpecError
from tests.conftest import assert_unchanged, max_distinct_per_group, sparsity, state_snapshot

LAYERS = ("conv2", "conv3", "conv4", "fc1")


def test_prune_then_palettize_keeps_zeros_and_luts(tiny, fashion):
    snapshot = state_snapshot(tiny.module)
    spec = PipelineSpec((PruneSpec(target_sparsity=0.5, weight_threshold=1000), PalettizeSpec(n_bits=2, weight_threshold=1000)))
    result = compress(model=tiny, spec=spec, dataset=fashion)
    assert_unchanged(tiny.module, snapshot)
    for name in LAYERS:
        layer = result.module.get_submodule(name)
        weight = layer.weight.detach()
        assert sparsity(weight) == pytest.approx(0.5, abs=0.01)
        # masked k-means: the 4 LUT entries all go to the surviving weights, zero comes from the mask
        nonzero = torch.unique(weight[weight != 0])
        assert nonzero.numel() <= 4
        assert compression_types(read_metadata(layer)) == ["pruning", "palettization"]
        report = next(r for r in result.layers if r.name == name)
        assert report.method == "prune+palettize" and report.bits == 2 and report.sparsity == pytest.approx(0.5, abs=0.01)
    fc2 = next(r for r in result.layers if r.name == "fc2")
    assert not fc2.compressed and fc2.reason.startswith("below weight_threshold")


def test_prune_then_quantize_int4(tiny, fashion):
    spec = PipelineSpec((PruneSpec(target_sparsity=0.75, weight_threshold=1000), QuantizeWeightsSpec(dtype="int4", mode="asymmetric", weight_threshold=1000)))
    result = compress(model=tiny, spec=spec, dataset=fashion)
    for name in LAYERS:
        layer = result.module.get_submodule(name)
        assert sparsity(layer.weight.detach()) >= 0.75 - 0.01
        assert max_distinct_per_group(layer.weight.detach(), 1) <= 16
        assert compression_types(read_metadata(layer)) == ["pruning", "quantization"]


def test_second_step_skipped_is_reported(tiny, fashion):
    spec = PipelineSpec((PruneSpec(target_sparsity=0.5, weight_threshold=1000), PalettizeSpec(n_bits=4, weight_threshold=5000)))
    result = compress(model=tiny, spec=spec, dataset=fashion)
    conv3 = next(r for r in result.layers if r.name == "conv3")  # 4,608 weights: pruned, not palettized
    assert conv3.compressed and conv3.method == "prune"
    assert conv3.extra["palettize_skipped"].startswith("below weight_threshold")


def test_unsupported_order_is_rejected():
    with pytest.raises(SpecError, match="prune first"):
        PipelineSpec((PalettizeSpec(), PruneSpec()))
