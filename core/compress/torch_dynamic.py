"""PyTorch dynamic quantization of Linear layers (weights ahead of time, activations on the fly): torch.ao
``quantize_dynamic``. Real int8 GEMM kernels for int8; fp16 weights are unpacked to fp32 for the matmul."""

from __future__ import annotations

import time

import torch
from torch import nn

from core.compress.context import CompressionContext, CompressionError
from core.compress.layers import plan_layers
from core.compress.library_config import LayerSpecs
from core.compress.registry import ARTIFACT_TORCHSCRIPT, STORAGE_LINEAR, MethodDescriptor, register_method
from core.compress.result import CompressionResult
from core.compress.torch_ao import (
    default_dynamic_qconfig,
    float16_dynamic_qconfig,
    quantize_dynamic,
    set_engine,
    torch_reports,
)
from core.specs import TorchDynamicSpec


def _dynamic_check(name: str, layer: nn.Module, layer_spec: TorchDynamicSpec) -> str | None:
    if not isinstance(layer, nn.Linear):
        return f"PyTorch dynamic quantization covers Linear layers only, not {type(layer).__name__}"
    return None


def dynamic_library_config(
    spec: TorchDynamicSpec, *, layers: LayerSpecs | None = None, fine_tune_steps: int | None = None
) -> dict:
    """torch.ao quantize_dynamic: the Linear layers (by exact name when the model is known) and the weight dtype."""
    dtype = "qint8" if spec.dtype == "int8" else "float16"
    if layers is not None:
        qconfig_spec: list | dict = {name: dtype for name, layer_spec in layers.items() if layer_spec is not None}
    else:
        qconfig_spec = ["Linear"]
    return {
        "api": "torch.ao.quantization.quantize_dynamic",
        "config": {"qconfig_spec": qconfig_spec, "dtype": dtype},
        "workflow": spec.workflow,
    }


def _dynamic_snippet(spec: TorchDynamicSpec, config_entry: dict, var: str) -> str:
    dtype = "torch.qint8" if spec.dtype == "int8" else "torch.float16"
    return f"\nmodel = torch.ao.quantization.quantize_dynamic(model.eval(), {{torch.nn.Linear}}, dtype={dtype})\n"


def _dynamic_latency_note(*, spec: TorchDynamicSpec, result, timed_artifact: bool) -> str:
    if spec.dtype == "int8":
        how = "int8 weights ahead of time, activations quantized on the fly, real int8 GEMM kernels"
    else:
        how = "fp16 weights unpacked to fp32 for every matmul, no int8 kernels"
    return (
        f"torch_dynamic quantizes only Linear layers ({how}); convolutions stay fp32, so a conv-heavy model's CPU "
        "latency barely changes."
    )


def torch_dynamic(module: nn.Module, spec: TorchDynamicSpec, context: CompressionContext) -> CompressionResult:
    started = time.perf_counter()
    set_engine("x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm")
    plans = plan_layers(module, spec, _dynamic_check)
    config_entry = dynamic_library_config(spec, layers={n: p.spec if p.eligible else None for n, p in plans.items()})
    qconfigs = {
        name: default_dynamic_qconfig if dtype == "qint8" else float16_dynamic_qconfig
        for name, dtype in config_entry["config"]["qconfig_spec"].items()
    }
    if not qconfigs:
        raise CompressionError("the model has no Linear layer to quantize dynamically; try torch_static instead.")
    context.progress.update(0.2, f"dynamic {spec.dtype} quantization of {len(qconfigs)} Linear layers")
    with context.library_logging():
        quantized = quantize_dynamic(module.eval(), qconfigs, inplace=False)
    layers, weights = torch_reports(context=context, compressed=quantized, plans=plans, method="torch_dynamic")
    int8 = spec.dtype == "int8"
    context.note(
        "Dynamic quantization: Linear weights stored as "
        + ("int8, activations quantized on the fly per batch (int8 GEMM kernels)." if int8 else "fp16 and unpacked to fp32 for the matmul (no int8 kernels).")
    )
    return CompressionResult(
        module=quantized.eval(), spec=spec, seconds=time.perf_counter() - started, layers=layers, weights=weights,
        runs_int8_kernels=int8, quantized_engine=torch.backends.quantized.engine, library_config=config_entry,
    )


DESCRIPTOR = register_method(
    MethodDescriptor(
        name="torch_dynamic",
        label="PyTorch dynamic",
        color="#9d755d",
        source="PyTorch dynamic quantization (Linear layers only), as in a PyTorch ResNet-34 quantization report",
        spec_type=TorchDynamicSpec,
        handler=torch_dynamic,
        eligibility=lambda spec: _dynamic_check,
        library_config=dynamic_library_config,
        snippet=_dynamic_snippet,
        storage=STORAGE_LINEAR,
        latency_note=_dynamic_latency_note,
        runs_int8_kernels=True,
        artifact_kind=ARTIFACT_TORCHSCRIPT,
    )
)
