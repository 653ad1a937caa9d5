"""PyTorch's own int8 paths (torch.ao), the shared part: the quantized engine and the per-layer report.

Unlike the coremltools methods these produce modules that run on real int8 CPU kernels (fbgemm / x86 /
qnnpack), so their PyTorch latency is meaningful. Their artifact is TorchScript, not an .mlpackage.
The methods themselves are ``torch_dynamic`` and ``torch_static``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.ao.nn import quantized as nnq
from torch.ao.nn.quantized import dynamic as nnqd

from core.compress.context import CompressionContext, CompressionError
from core.compress.layers import LayerPlan, conv_bn_pairs, folded_weight, locate, sparsity, weight_of, weight_snr_db
from core.compress.result import LayerReport

QUANTIZED_TYPES = (nnq.Conv1d, nnq.Conv2d, nnq.Conv3d, nnq.Linear, nnqd.Linear)


def set_engine(backend: str) -> None:
    if backend not in torch.backends.quantized.supported_engines:
        raise CompressionError(
            f"the {backend} quantized engine is not available in this PyTorch build "
            f"(available: {', '.join(torch.backends.quantized.supported_engines)})."
        )
    torch.backends.quantized.engine = backend


# --------------------------------------------------------------------------- report


def torch_reports(
    *, context: CompressionContext, compressed: nn.Module, plans: dict[str, LayerPlan], method: str
) -> tuple[list[LayerReport], dict[str, dict]]:
    original = context.original
    bn_pairs = conv_bn_pairs(original) if method == "torch_static" else {}
    reports: list[LayerReport] = []
    weights: dict[str, dict] = {}
    for name, plan in plans.items():
        before = original.get_submodule(name).weight.detach().float().cpu()
        layer = locate(compressed, name)
        reference = before
        bn_name = bn_pairs.get(name)
        if bn_name is not None:
            reference = folded_weight(original, name, bn_name)
        report = LayerReport(name=name, type=plan.type, shape=plan.shape, params=plan.params, compressed=False)
        tensors: dict = {"original": reference.clone()}
        if layer is not None and isinstance(layer, QUANTIZED_TYPES):
            raw = layer.weight()
            after = weight_of(layer)
            report.compressed = True
            report.method = method
            report.sparsity = sparsity(after)
            report.snr_db = weight_snr_db(reference, after)
            report.extra["module"] = f"{type(layer).__module__}.{type(layer).__name__}"
            if bn_name is not None:
                report.extra["batchnorm_folded"] = bn_name
            if raw.is_quantized:
                report.bits = 8.0
                report.extra["weight_dtype"] = str(raw.dtype).replace("torch.", "")
                report.extra["int_repr_dtype"] = str(raw.int_repr().dtype).replace("torch.", "")
                if raw.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                    scales, zero_points = raw.q_per_channel_scales(), raw.q_per_channel_zero_points()
                    report.granularity = "per_channel"
                else:
                    scales, zero_points = torch.tensor([raw.q_scale()]), torch.tensor([raw.q_zero_point()])
                    report.granularity = "per_tensor"
                report.n_scales, report.n_zero_points = int(scales.numel()), int(zero_points.numel())
                tensors["scale"] = scales.float()
                tensors["zero_point"] = zero_points.float()
            else:  # fp16 dynamic quantization
                report.bits = 16.0
                report.granularity = "fp16"
                report.extra["weight_dtype"] = "float16 (packed; unpacked to float32 for the matmul)"
            tensors["compressed"] = after
        else:
            report.sparsity = sparsity(before)
            report.reason = plan.reason or (
                "left in float by FX quantization (no int8 pattern matched this op)" if layer is not None
                else "not found in the quantized graph"
            )
            tensors = {"original": before.clone(), "compressed": before.clone()}
        reports.append(report)
        weights[name] = tensors
    return reports, weights
