"""Random weights that mean something: BatchNorm statistics re-estimated so activations are not ~1e-9."""

from __future__ import annotations

import pytest
import torch
import torchvision

from core.models.bn_calibration import batchnorm_layers, recalibrate_batchnorm
from core.models.sources import load_model


def _output_std(module: torch.nn.Module) -> float:
    x = torch.randn((4, 3, 224, 224), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return float(module.eval()(x).std())


@pytest.mark.slow
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


@pytest.mark.slow
def test_the_route_recalibrates_and_says_so():
    model = load_model("torchvision:mobilenet_v3_small")
    assert _output_std(model.module) > 1e-3
    assert "BatchNorm statistics of 34 layers recalibrated on 16 synthetic images" in model.weights_note


def test_an_all_zero_classifier_head_is_redrawn_so_outputs_can_differ():
    """torchvision's ViT zeroes its head: every random output would be exactly 0 and no prediction could flip."""
    from torch import nn

    from core.models.bn_calibration import prepare_random_weights, redraw_zero_head

    torch.manual_seed(0)  # the layers' initialisation: the same whichever tests ran before (or were deselected)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 5))
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)  # as torchvision's VisionTransformer does
    x = torch.randn((4, 3, 16, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert float(net.eval()(x).abs().max()) == 0.0
    done = prepare_random_weights(net, input_shape=(3, 16, 16))
    assert done == ("BatchNorm statistics of 1 layers recalibrated on 16 synthetic images; its all-zero classifier "
                    "head redrawn (seeded, std 0.02)")
    with torch.no_grad():
        assert float(net(x).std(dim=0).min()) > 1e-3  # every class score now differs between images
    first = net[-1].weight.clone()
    nn.init.zeros_(net[-1].weight)
    assert redraw_zero_head(net) and torch.equal(net[-1].weight, first)  # seeded
    assert not redraw_zero_head(net)  # a head with weights is left alone
