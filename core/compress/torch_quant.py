"""PyTorch's own int8 paths (torch.ao): dynamic quantization of Linear layers and FX-graph static int8.

Unlike the coremltools methods these produce modules that run on real int8 CPU kernels (fbgemm / x86 /
qnnpack), so their PyTorch latency is meaningful. Their artifact is TorchScript, not an .mlpackage.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.ao.nn import quantized as nnq
from torch.ao.nn.quantized import dynamic as nnqd
from torch.ao.quantization import (
    QConfig,
    default_dynamic_qconfig,
    default_per_channel_weight_observer,
    default_weight_observer,
    disable_observer,
    float16_dynamic_qconfig,
    get_default_qat_qconfig_mapping,
    get_default_qconfig_mapping,
    quantize_dynamic,
)
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx

from core.compress.context import CompressionContext, CompressionError
from core.compress.finetune import fine_tune, plan_fine_tune
from core.compress.layers import (
    LayerPlan,
    conv_bn_pairs,
    folded_weight,
    locate,
    plan_layers,
    snr_db,
    sparsity,
    weight_of,
)
from core.compress.result import CompressionResult, LayerReport
from core.specs import TorchDynamicSpec, TorchStaticSpec

QUANTIZED_TYPES = (nnq.Conv1d, nnq.Conv2d, nnq.Conv3d, nnq.Linear, nnqd.Linear)


def _set_engine(backend: str) -> None:
    if backend not in torch.backends.quantized.supported_engines:
        raise CompressionError(
            f"the {backend} quantized engine is not available in this PyTorch build "
            f"(available: {', '.join(torch.backends.quantized.supported_engines)})."
        )
    torch.backends.quantized.engine = backend


# --------------------------------------------------------------------------- dynamic


def _dynamic_check(name: str, layer: nn.Module, layer_spec: TorchDynamicSpec) -> str | None:
    if not isinstance(layer, nn.Linear):
        return f"PyTorch dynamic quantization covers Linear layers only, not {type(layer).__name__}"
    return None


def torch_dynamic(module: nn.Module, spec: TorchDynamicSpec, context: CompressionContext) -> CompressionResult:
    started = time.perf_counter()
    _set_engine("x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm")
    plans = plan_layers(module, spec, _dynamic_check)
    qconfigs = {
        name: default_dynamic_qconfig if plan.spec.dtype == "int8" else float16_dynamic_qconfig
        for name, plan in plans.items()
        if plan.eligible
    }
    if not qconfigs:
        raise CompressionError("the model has no Linear layer to quantize dynamically; try torch_static instead.")
    context.progress.update(0.2, f"dynamic {spec.dtype} quantization of {len(qconfigs)} Linear layers")
    with context.library_logging():
        quantized = quantize_dynamic(module.eval(), qconfigs, inplace=False)
    layers, weights = _torch_reports(context=context, compressed=quantized, plans=plans, method="torch_dynamic")
    int8 = spec.dtype == "int8"
    context.note(
        "Dynamic quantization: Linear weights stored as "
        + ("int8, activations quantized on the fly per batch (int8 GEMM kernels)." if int8 else "fp16 and unpacked to fp32 for the matmul (no int8 kernels).")
    )
    return CompressionResult(
        module=quantized.eval(), spec=spec, seconds=time.perf_counter() - started, layers=layers, weights=weights,
        runs_int8_kernels=int8, quantized_engine=torch.backends.quantized.engine,
    )


# --------------------------------------------------------------------------- static (FX)


def _static_check(name: str, layer: nn.Module, layer_spec: TorchStaticSpec) -> str | None:
    if not isinstance(layer, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear | nn.ConvTranspose1d | nn.ConvTranspose2d):
        return f"FX static int8 has no quantized kernel for {type(layer).__name__}"
    return None


def _qconfig_mapping(spec: TorchStaticSpec, plans: dict[str, LayerPlan], *, qat: bool):
    mapping = get_default_qat_qconfig_mapping(spec.backend) if qat else get_default_qconfig_mapping(spec.backend)
    default = mapping.global_qconfig
    if not qat:  # choose the weight observer explicitly: per output channel or one scale per tensor
        weight = default_per_channel_weight_observer if spec.per_channel else default_weight_observer
        mapping.set_global(QConfig(activation=default.activation, weight=weight))
    elif not spec.per_channel:
        from torch.ao.quantization import default_weight_fake_quant

        mapping.set_global(QConfig(activation=default.activation, weight=default_weight_fake_quant))
    for name, plan in plans.items():
        if plan.spec is None:
            mapping.set_module_name(name, None)
    return mapping


def torch_static(module: nn.Module, spec: TorchStaticSpec, context: CompressionContext) -> CompressionResult:
    started = time.perf_counter()
    _set_engine(spec.backend)
    plans = plan_layers(module, spec, _static_check)
    qat = spec.workflow == "fine_tune"
    example = (context.example_input(),)
    with context.library_logging():
        try:
            if qat:
                plan = plan_fine_tune(spec=spec, context=context, what="torch_static fine_tune (QAT)")
                prepared = prepare_qat_fx(module.train(), _qconfig_mapping(spec, plans, qat=True), example_inputs=example)
                freeze_bn_at, freeze_observers_at = max(1, plan.total_steps // 2), max(1, int(plan.total_steps * 0.8))

                def after_step(step: int) -> None:
                    if step == freeze_bn_at:
                        prepared.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
                    if step == freeze_observers_at:
                        prepared.apply(disable_observer)

                fine_tune(module=prepared, spec=spec, context=context, plan=plan, after_step=after_step, label="int8 QAT (torch.ao)")
            else:
                prepared = prepare_fx(module.eval(), _qconfig_mapping(spec, plans, qat=False), example_inputs=example)
                batches = context.calibration_batches(samples=spec.calibration_samples, seed=spec.seed)
                with torch.no_grad():
                    for index, (inputs, _labels) in enumerate(batches):
                        prepared(inputs)
                        context.progress.update((index + 1) / len(batches), "calibrating activation ranges")
            prepared.eval()
            quantized = convert_fx(prepared)
        except (torch.fx.proxy.TraceError, NotImplementedError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise CompressionError(
                f"FX graph mode could not quantize this model ({first}); it needs a symbolically traceable forward. "
                "Use quantize_activations (coremltools) or torch_dynamic instead."
            ) from None
    quantized_modules = [n for n, m in quantized.named_modules() if isinstance(m, QUANTIZED_TYPES)]
    if not quantized_modules:
        raise CompressionError("FX static quantization produced no int8 modules; nothing runs on int8 kernels.")
    layers, weights = _torch_reports(context=context, compressed=quantized, plans=plans, method="torch_static")
    adds = sum(1 for node in quantized.graph.nodes if "quantized.add" in str(node.target))
    context.note(
        f"FX static int8 ({spec.backend}, {'per-channel' if spec.per_channel else 'per-tensor'} weights): "
        f"{len(quantized_modules)} int8 modules with Conv+BN(+ReLU) fused, {adds} quantized residual add(s); "
        "runs on real int8 CPU kernels."
    )
    return CompressionResult(
        module=quantized, spec=spec, seconds=time.perf_counter() - started, layers=layers, weights=weights,
        runs_int8_kernels=True, calibration_source=context.calibration_source, quantized_engine=spec.backend,
    )


# --------------------------------------------------------------------------- report


def _torch_reports(
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
            report.snr_db = snr_db(reference, after)
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

