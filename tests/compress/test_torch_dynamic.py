"""torch.ao dynamic quantization: Linear layers only, int8 (real int8 kernels) or fp16."""

from __future__ import annotations

import torch
from torch.ao.nn.quantized import dynamic as nnqd

from core.compress import compress
from core.specs import TorchDynamicSpec
from tests.conftest import assert_unchanged, state_snapshot


def _by_name(result):
    return {r.name: r for r in result.layers}


def test_dynamic_int8_quantizes_linear_only(tiny, fashion):
    snapshot = state_snapshot(tiny.module)
    result = compress(model=tiny, spec=TorchDynamicSpec(dtype="int8"), dataset=fashion)
    assert_unchanged(tiny.module, snapshot)
    assert isinstance(result.module.fc1, nnqd.Linear) and result.module.fc1.weight().dtype == torch.qint8
    assert result.runs_int8_kernels
    layers = _by_name(result)
    assert layers["fc1"].compressed and layers["fc1"].snr_db > 35.0
    assert layers["conv2"].reason == "PyTorch dynamic quantization covers Linear layers only, not Conv2d"


def test_dynamic_fp16(tiny, fashion):
    result = compress(model=tiny, spec=TorchDynamicSpec(dtype="fp16"), dataset=fashion)
    assert not result.runs_int8_kernels
    assert _by_name(result)["fc2"].bits == 16 and _by_name(result)["fc2"].snr_db > 60.0
