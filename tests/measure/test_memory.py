"""Peak memory of one inference from the profiler's allocation events."""

from __future__ import annotations

import torch
from torch import nn

from core.measure.memory import peak_inference_memory_bytes


def test_peak_memory_grows_with_activation_size() -> None:
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1)).eval()
    small = peak_inference_memory_bytes(run=model, inputs=torch.randn(1, 3, 16, 16))
    large = peak_inference_memory_bytes(run=model, inputs=torch.randn(1, 3, 64, 64))
    assert small is not None and large is not None
    # one 16×64×64 fp32 activation alone is 256 KiB
    assert large >= 16 * 64 * 64 * 4
    assert large > 4 * small


def test_profiler_chatter_does_not_reach_notes() -> None:
    notes: list[str] = []
    peak_inference_memory_bytes(run=nn.Linear(8, 8).eval(), inputs=torch.randn(4, 8), notes=notes)
    assert not any("profiler_start" in n or "USDT" in n for n in notes)
