"""Lesson 6: fake quantization equals the libraries' rounding, its gradient is straight-through, and a short
fine-tuning run on the sample model recovers accuracy lost at 2 bits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.data import load_fashion_mnist
from core.learn.finetune import (
    FineTuneSetting,
    fake_quantize_weight,
    fine_tune,
    straight_through,
    with_fake_quantization,
)
from core.learn.quantization import LinearSetting, linear_quantize


@pytest.mark.parametrize("bits", [4, 8, 3])
def test_fake_quantized_weights_equal_the_libraries(conv_weight, bits):
    """4 and 8 bits: coremltools' compute_qparams (what PostTrainingQuantizer stores); 3 bits: torch.ao's observer."""
    ours = fake_quantize_weight(torch.from_numpy(conv_weight), bits).numpy()
    library = linear_quantize(conv_weight, LinearSetting(bits=bits, symmetric=True, granularity="per_channel")).dequantized
    steps = np.abs(ours - library) / np.abs(library).max()
    assert np.mean(ours == library) > 0.999  # exact but for ties rounded the other way (see test_quantization)
    assert steps.max() < 2.0 ** (1 - bits) * 1.01


def test_straight_through_gradient_is_one_inside_and_zero_outside():
    x = np.linspace(-2.0, 2.0, 401, dtype=np.float32)
    forward, gradient = straight_through(x, bits=2, limit=1.0)
    assert set(np.round(forward, 6)) == {-1.0, 0.0, 1.0}  # 2 bits symmetric: three levels
    # torch passes the gradient wherever the value rounds onto the grid: up to half a step (scale 1) beyond ±1
    assert np.all(gradient[np.abs(x) < 1.49] == 1.0) and np.all(gradient[np.abs(x) > 1.51] == 0.0)


def test_fake_quantization_wraps_the_large_layers_of_a_copy(sample):
    before = {k: v.clone() for k, v in sample.module.state_dict().items()}
    working, names = with_fake_quantization(sample.module, 4)
    assert names == [n for n, m in sample.module.named_modules() if hasattr(m, "weight") and m.weight is not None
                     and m.weight.dim() > 1 and m.weight.numel() > 2048]
    assert all(torch.equal(before[k], v) for k, v in sample.module.state_dict().items())  # the input is untouched
    layer = dict(working.named_modules())[names[0]]
    assert torch.equal(layer.weight, fake_quantize_weight(layer.parametrizations.weight.original, 4))


@pytest.mark.slow
def test_short_run_recovers_accuracy_lost_at_two_bits(sample):
    run = fine_tune(module=sample.module, dataset=load_fashion_mnist(),
                    setting=FineTuneSetting(bits=2, steps=15, eval_images=200))
    assert len(run.losses) == len(run.float_losses) == 15
    assert run.before_accuracy < run.float_accuracy - 0.2  # 2-bit rounding, no fine-tuning: accuracy collapses
    assert run.after_accuracy > run.before_accuracy + 0.2  # 15 steps win most of it back
    assert run.losses[-5:].mean() < run.losses[:3].mean()
    with pytest.raises(ValueError, match="bits must be between 2 and 8"):
        FineTuneSetting(bits=1)
