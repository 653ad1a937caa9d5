"""torch.ao FX static int8: fused Conv+BN(+ReLU), a quantized residual add, real int8 kernels; QAT; refusals."""

from __future__ import annotations

import pytest
import torch
from torch.ao.nn import quantized as nnq

from core.compress import CompressionError, compress
from core.specs import TorchStaticSpec


def _by_name(result):
    return {r.name: r for r in result.layers}


@pytest.mark.parametrize(("backend", "per_channel"), [("x86", True), ("qnnpack", False), ("onednn", True)])
def test_static_int8_fuses_and_quantizes_the_residual_add(tiny, fashion, backend, per_channel):
    spec = TorchStaticSpec(backend=backend, per_channel=per_channel, calibration_samples=64)
    result = compress(model=tiny, spec=spec, dataset=fashion)
    module = result.module
    assert result.runs_int8_kernels
    quantized = [m for m in module.modules() if isinstance(m, nnq.Conv2d | nnq.Linear)]
    assert len(quantized) == 6
    assert all(m.weight().int_repr().dtype == torch.int8 for m in quantized)
    assert any("quantized.add" in str(node.target) for node in module.graph.nodes)  # out + identity stays int8
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())  # folded into the convs
    layers = _by_name(result)
    assert layers["conv2"].extra["batchnorm_folded"] == "bn2"
    assert layers["conv4"].granularity == ("per_channel" if per_channel else "per_tensor")
    assert all(r.compressed and r.snr_db > 30.0 for r in result.layers)
    images, _ = next(iter(fashion.batches(fashion.eval_split(limit=64), batch_size=64)))
    with torch.no_grad():
        agreement = (module(images).argmax(1) == tiny.module(images).argmax(1)).float().mean()
    assert agreement > 0.8


def test_static_override_keeps_a_layer_float(tiny, fashion):
    result = compress(model=tiny, spec=TorchStaticSpec(calibration_samples=32, overrides={"fc2": None}), dataset=fashion)
    layers = _by_name(result)
    assert not layers["fc2"].compressed and "overridden" in layers["fc2"].reason
    assert isinstance(result.module.fc2, torch.nn.Linear)


def test_static_fine_tune_qat(tiny, fashion):
    spec = TorchStaticSpec(workflow="fine_tune", max_steps=3, batch_size=32, train_limit=128)
    result = compress(model=tiny, spec=spec, dataset=fashion)
    assert sum(isinstance(m, nnq.Conv2d | nnq.Linear) for m in result.module.modules()) == 6


def test_static_refuses_torchscript(tiny, fashion, tmp_path):
    from core.models.sources import load_torchscript

    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.trace(tiny.module, torch.zeros(1, 1, 28, 28)), str(path))
    scripted = load_torchscript(path)
    with pytest.raises(CompressionError, match=r"FX graph mode traces nn\.Module code"):
        compress(model=scripted, spec=TorchStaticSpec(), dataset=fashion)
