"""PyTorch's own int8 paths (torch.ao), the shared part: the quantized engine, the FX API and the per-layer report.

Unlike the coremltools methods these produce modules that run on real int8 CPU kernels (fbgemm / x86 / onednn /
qnnpack), so their PyTorch latency is meaningful. Their artifact is TorchScript, not an .mlpackage.
The methods themselves are ``torch_dynamic`` and ``torch_static``.

torch.ao's quantization API is deprecated upstream ("torch.ao.quantization is deprecated and will be removed in
2.10", printed on first use; the successor is torchao's PT2E flow). Every torch.ao quantization call the studio makes
goes through this module, so moving to PT2E touches this file only. PT2E stays out for now: measured on this
project's CPUs it was not faster (see FX_DEPRECATION_NOTE and bench/int8_peers.py, which times it when torchao is
installed).
Also measured and left out (bench/int8_peers.py, TRIED): preparing with torch.ao's oneDNN backend config, which
fuses Conv+BN+add+ReLU into one quantized::conv2d_add_relu kernel (with a channels_last input: ~7 % on resnet18,
nothing on mobilenet_v2) but runs only under the onednn engine and needs a calibration of its own.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.ao.nn import quantized as nnq
from torch.ao.nn.quantized import dynamic as nnqd
from torch.ao.quantization import (
    QConfig,
    default_dynamic_qconfig,
    default_per_channel_weight_observer,
    default_weight_fake_quant,
    default_weight_observer,
    disable_observer,
    float16_dynamic_qconfig,
    get_default_qat_qconfig_mapping,
    get_default_qconfig_mapping,
    quantize_dynamic,
)
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx

from core.compress.context import CompressionContext, CompressionError
from core.compress.layers import LayerPlan, conv_bn_pairs, folded_weight, locate, sparsity, weight_of, weight_snr_db
from core.compress.result import LayerReport

QUANTIZED_TYPES = (nnq.Conv1d, nnq.Conv2d, nnq.Conv3d, nnq.Linear, nnqd.Linear)
__all__ = [
    "FX_DEPRECATION_NOTE", "QUANTIZED_TYPES", "default_dynamic_qconfig", "float16_dynamic_qconfig", "fx_convert",
    "fx_disable_observers", "fx_freeze_bn_stats", "fx_prepare", "quantize_dynamic", "set_engine", "torch_reports",
]

FX_DEPRECATION_NOTE = (
    "torch.ao FX quantization is deprecated upstream (torch.ao.quantization is announced for removal; its successor "
    "is torchao PT2E). The studio keeps FX because PT2E (X86InductorQuantizer + torch.compile with inductor freezing, "
    "torchao 0.18) was not faster where measured: resnet18, batch 1, 2 threads, 73–75 ms vs 74 ms fp32 eager on an "
    "AVX2 CPU (no gain); on an AMX Xeon, same process, interleaved, its int8 lowering worked (conv+add+relu fused) "
    "yet it ran 1.3–1.7× slower than FX int8 in its fastest form on resnet18 and 1.4–1.5× on mobilenet_v2, and "
    "without freezing nothing is lowered to int8 (fp32 speed). All FX calls live in core/compress/torch_ao.py, so the "
    "move touches one file."
)


def set_engine(backend: str) -> None:
    if backend not in torch.backends.quantized.supported_engines:
        raise CompressionError(
            f"the {backend} quantized engine is not available in this PyTorch build "
            f"(available: {', '.join(torch.backends.quantized.supported_engines)})."
        )
    torch.backends.quantized.engine = backend


# --------------------------------------------------------------------------- the FX API (deprecated upstream)


def fx_qconfig_mapping(*, backend: str, qat: bool, per_channel: bool, skip_layers: list[str]):
    """The backend's default (QAT) qconfig mapping with the weight observer chosen explicitly (per output channel
    or one scale per tensor) and the skipped layers left in float."""
    mapping = get_default_qat_qconfig_mapping(backend) if qat else get_default_qconfig_mapping(backend)
    default = mapping.global_qconfig
    if not qat:
        weight = default_per_channel_weight_observer if per_channel else default_weight_observer
        mapping.set_global(QConfig(activation=default.activation, weight=weight))
    elif not per_channel:
        mapping.set_global(QConfig(activation=default.activation, weight=default_weight_fake_quant))
    for name in skip_layers:
        mapping.set_module_name(name, None)
    return mapping


def fx_prepare(
    module: nn.Module, *, qat: bool, backend: str, per_channel: bool, skip_layers: list[str], example_inputs: tuple
) -> torch.fx.GraphModule:
    """prepare_fx (observers) or prepare_qat_fx (fake quantization for training) on `module` (which FX copies)."""
    mapping = fx_qconfig_mapping(backend=backend, qat=qat, per_channel=per_channel, skip_layers=skip_layers)
    if qat:
        return prepare_qat_fx(module.train(), mapping, example_inputs=example_inputs)
    return prepare_fx(module.eval(), mapping, example_inputs=example_inputs)


def fx_convert(prepared: nn.Module) -> torch.fx.GraphModule:
    """convert_fx: observers → real int8 modules, weights packed for the quantized engine in force."""
    return convert_fx(prepared)


def fx_freeze_bn_stats(prepared: nn.Module) -> None:
    prepared.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)


def fx_disable_observers(prepared: nn.Module) -> None:
    prepared.apply(disable_observer)


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
