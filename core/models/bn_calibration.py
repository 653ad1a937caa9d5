"""BatchNorm statistics for randomly initialised models, so their activations are in a realistic range.

A freshly built network's BatchNorm layers hold running mean 0 and variance 1, which matches nothing its random
convolutions produce; in eval mode the signal then shrinks layer after layer (random MobileNetV2/V3 outputs are
~1e-9), and every quantization number measured on it is noise. Re-estimating the statistics on a few seeded
synthetic batches — the cumulative average of a train-mode forward, without gradients — gives each layer
unit-scale outputs, as trained BatchNorm layers have.

Some builders also zero their classifier head (torchvision's ViT), so every random output is exactly 0 and no
prediction can flip; `redraw_zero_head` gives such a head small seeded random weights instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.models.checkpoints import classifier_head

_BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
CALIBRATION_SEED = 1234  # its own stream: never the calibration or evaluation inputs of a compression run


@dataclass(frozen=True)
class BatchNormCalibration:
    """What a recalibration did: how many layers and images."""

    layers: int
    images: int

    def describe(self) -> str:
        if not self.layers:
            return "no BatchNorm layers to recalibrate"
        return f"BatchNorm statistics of {self.layers} layers recalibrated on {self.images} synthetic images"


def batchnorm_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, _BATCHNORM_TYPES)]


HEAD_STD = 0.02  # timm's and torchvision's usual truncated-normal scale for Linear layers


@torch.no_grad()
def redraw_zero_head(module: nn.Module, *, seed: int = CALIBRATION_SEED) -> bool:
    """Give an all-zero classifier head (the last Linear / Conv2d) seeded truncated-normal weights; True if redrawn."""
    _, head = classifier_head(module)
    if bool(head.weight.any()):
        return False
    nn.init.trunc_normal_(head.weight, std=HEAD_STD, a=-2 * HEAD_STD, b=2 * HEAD_STD,
                          generator=torch.Generator().manual_seed(seed))
    return True


def prepare_random_weights(module: nn.Module, *, input_shape: tuple[int, ...]) -> str:
    """Make a freshly built model's outputs meaningful to compare (zero head redrawn, BatchNorm recalibrated);
    returns what was done, for the model's weights note."""
    redrawn = redraw_zero_head(module)
    done = recalibrate_batchnorm(module, input_shape=input_shape).describe()
    return done + ("; its all-zero classifier head redrawn (seeded, std 0.02)" if redrawn else "")


@torch.no_grad()
def recalibrate_batchnorm(module: nn.Module, *, input_shape: tuple[int, ...], batches: int = 2, batch_size: int = 8,
                          seed: int = CALIBRATION_SEED) -> BatchNormCalibration:
    """Reset every BatchNorm's running statistics and re-estimate them on seeded standard-normal inputs.

    Only the running statistics change (weights and affine parameters stay); the module is left in eval mode.
    """
    layers = batchnorm_layers(module)
    if not layers:
        module.eval()
        return BatchNormCalibration(layers=0, images=0)
    saved_momentum = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over every batch, not an exponential one
    generator = torch.Generator().manual_seed(seed)
    module.train()
    try:
        for _ in range(batches):
            module(torch.randn((batch_size, *input_shape), generator=generator))
    finally:
        for layer, momentum in zip(layers, saved_momentum, strict=True):
            layer.momentum = momentum
        module.eval()
    return BatchNormCalibration(layers=len(layers), images=batches * batch_size)
