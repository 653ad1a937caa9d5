"""Random weights that mean something: BatchNorm statistics re-estimated so activations are not ~1e-9."""

from __future__ import annotations

import torch
import torchvision

from core.models.bn_calibration import batchnorm_layers, recalibrate_batchnorm
from core.models.sources import load_model


def _output_std(module: torch.nn.Module) -> float:
    x = torch.randn((4, 3, 224, 224), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return float(module.eval()(x).std())


def test_random_mobilenet_v3_small_outputs_vanish_before_and_are_realistic_after():
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small()
    weights = {k: v.clone() for k, v in net.named_parameters()}
    momenta = [layer.momentum for layer in batchnorm_layers(net)]
    before = _output_std(net)
    result = recalibrate_batchnorm(net, input_shape=(3, 224, 224))
    after = _output_std(net)
    assert before < 1e-6 < 1e-3 < after
    assert result.layers == len(batchnorm_layers(net)) == 34 and result.images == 16
    assert not net.training
    assert all(torch.equal(weights[k], v) for k, v in net.named_parameters())  # only running statistics change
    assert [layer.momentum for layer in batchnorm_layers(net)] == momenta  # restored after the cumulative average


def test_the_route_recalibrates_and_says_so():
    model = load_model("torchvision:mobilenet_v3_small")
    assert _output_std(model.module) > 1e-3
    assert "BatchNorm statistics of 34 layers recalibrated on 16 synthetic images" in model.weights_note
