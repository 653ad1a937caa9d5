"""The `compress` API: registry, copies, cancellation, refusals and the per-layer report's completeness."""

from __future__ import annotations

import pytest
import torch

from core.compress import METHODS, CompressionError, compress
from core.compress.layers import weight_layers
from core.progress import Cancelled, Progress
from core.specs import SPEC_TYPES, PalettizeSpec, PruneSpec, QuantizeWeightsSpec, TorchDynamicSpec
from tests.conftest import tiny_model


def test_every_spec_type_has_a_handler():
    assert set(METHODS) == set(SPEC_TYPES)
    assert all(METHODS[name].spec_type is SPEC_TYPES[name] for name in METHODS)


@pytest.mark.parametrize(
    "spec",
    [PalettizeSpec(n_bits=4), QuantizeWeightsSpec(dtype="int4"), PruneSpec(), TorchDynamicSpec()],
    ids=lambda s: s.method,
)
def test_every_weight_layer_is_reported_once_with_a_reason_when_skipped(tiny, fashion, spec):
    result = compress(model=tiny, spec=spec, dataset=fashion)
    assert [r.name for r in result.layers] == list(weight_layers(tiny.module))
    for report in result.layers:
        assert report.compressed or report.reason, f"{report.name} skipped silently"
        assert report.params == tiny.module.get_submodule(report.name).weight.numel()
        assert set(result.weights[report.name]) >= {"original", "compressed"}
    assert result.seconds > 0


def test_fashion_cnn_palettize_and_prune(fashion_cnn, fashion):
    palettized = compress(model=fashion_cnn, spec=PalettizeSpec(n_bits=4), dataset=fashion)
    compressed = {r.name for r in palettized.layers if r.compressed}
    assert compressed == {"features.3", "features.7", "features.10", "classifier.1", "classifier.4"}
    assert all(r.snr_db > 18.0 for r in palettized.layers if r.compressed)
    pruned = compress(model=fashion_cnn, spec=PruneSpec(target_sparsity=0.6), dataset=fashion)
    assert all(abs(r.sparsity - 0.6) <= 0.01 for r in pruned.layers if r.compressed)


def test_cancel_stops_a_fine_tune(tiny, fashion):
    progress = Progress()

    def cancel_after_first_step(fraction: float, message: str) -> None:
        if "step 1/" in message:
            progress.cancel()

    progress.callback = cancel_after_first_step
    spec = PruneSpec(workflow="fine_tune", max_steps=50, batch_size=16, train_limit=800, weight_threshold=1000)
    with pytest.raises(Cancelled):
        compress(model=tiny, spec=spec, dataset=fashion, progress=progress)


def test_dataset_of_the_wrong_shape_is_refused(fashion):
    from core.models.sources import load_model

    resnet = load_model("torchvision:squeezenet1_1")
    with pytest.raises(CompressionError, match="expects 3×224×224"):
        compress(model=resnet, spec=PruneSpec(), dataset=fashion)


def test_dataset_with_another_class_count_is_refused(tiny, fashion):
    import dataclasses

    five_classes = dataclasses.replace(tiny, num_classes=5)
    with pytest.raises(CompressionError, match="10 classes but tiny has 5 outputs"):
        compress(model=five_classes, spec=PruneSpec(), dataset=fashion)


@pytest.mark.slow
def test_torchscript_upload_is_compressed_as_real_layers(tiny, tmp_path):
    from core.models.sources import load_torchscript

    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.trace(tiny.module, torch.zeros(1, 1, 28, 28)), str(path))
    result = compress(model=load_torchscript(path), spec=PalettizeSpec(weight_threshold=0), dataset=None)
    assert result.layers and all(r.compressed for r in result.layers)  # lifted (core.models.lifting); the
    # unconvertible case and its reason: tests/models/test_graph_routes.py


def test_seeded_runs_are_reproducible(fashion):
    spec = QuantizeWeightsSpec(workflow="calibration", calibration_samples=16, weight_threshold=1000)
    first = compress(model=tiny_model(), spec=spec, dataset=fashion)
    second = compress(model=tiny_model(), spec=spec, dataset=fashion)
    assert torch.equal(first.module.conv4.weight, second.module.conv4.weight)
