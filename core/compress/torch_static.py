"""PyTorch FX graph-mode static int8 (torch.ao ``prepare_fx`` / ``prepare_qat_fx`` → ``convert_fx``): fused
Conv+BN(+ReLU), quantized residual adds, real int8 CPU kernels.

* calibration → observers on calibration batches
* fine_tune   → quantization-aware training in the shared fine-tuning loop (BatchNorm and observers freeze late)
"""

from __future__ import annotations

import textwrap
import time

import torch
from torch import nn
from torch.ao.quantization import (
    QConfig,
    default_per_channel_weight_observer,
    default_weight_observer,
    disable_observer,
    get_default_qat_qconfig_mapping,
    get_default_qconfig_mapping,
)
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx

from core.compress.context import CompressionContext, CompressionError
from core.compress.finetune import fine_tune, plan_fine_tune
from core.compress.layers import LayerPlan, plan_layers
from core.compress.library_config import LayerSpecs, count_fine_tune_steps
from core.compress.registry import ARTIFACT_TORCHSCRIPT, STORAGE_LINEAR, MethodDescriptor, register_method
from core.compress.result import CompressionResult
from core.compress.torch_ao import QUANTIZED_TYPES, set_engine, torch_reports
from core.specs import TorchStaticSpec


def _static_check(name: str, layer: nn.Module, layer_spec: TorchStaticSpec) -> str | None:
    if not isinstance(layer, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear | nn.ConvTranspose1d | nn.ConvTranspose2d):
        return f"FX static int8 has no quantized kernel for {type(layer).__name__}"
    return None


def _static_layers(plans: dict[str, LayerPlan]) -> dict:
    """Only layers an override leaves in float are excluded by name; FX itself skips ops it has no kernel for."""
    return {name: plan.spec for name, plan in plans.items()}


def static_library_config(
    spec: TorchStaticSpec, *, layers: LayerSpecs | None = None, fine_tune_steps: int | None = None
) -> dict:
    """torch.ao FX static int8: the backend's default (QAT) qconfig mapping, the weight observer, the layers left in
    float, and for QAT the steps at which BatchNorm statistics and observers freeze."""
    qat = spec.workflow == "fine_tune"
    if layers is not None:
        skip = [name for name, layer_spec in layers.items() if layer_spec is None]
    else:
        skip = [pattern for pattern, partial in spec.overrides.items() if partial is None]
    config: dict = {
        "backend": spec.backend,
        "qconfig_mapping": f"get_default_{'qat_' if qat else ''}qconfig_mapping('{spec.backend}')",
        "weights": "per_channel" if spec.per_channel else "per_tensor",
        "calibration_samples": spec.calibration_samples,
        "skip_layers": skip,
    }
    steps = None
    if qat:
        steps = fine_tune_steps if fine_tune_steps is not None else count_fine_tune_steps(spec)
        config["freeze_bn_at"] = max(1, steps // 2)
        config["freeze_observers_at"] = max(1, int(steps * 0.8))
    out = {
        "api": "torch.ao.quantization.quantize_fx." + ("prepare_qat_fx" if qat else "prepare_fx"),
        "config": config,
        "workflow": spec.workflow,
    }
    if steps is not None:
        out["fine_tune_steps"] = steps
    return out


def _qconfig_mapping(config: dict, *, qat: bool):
    backend = config["backend"]
    per_channel = config["weights"] == "per_channel"
    mapping = get_default_qat_qconfig_mapping(backend) if qat else get_default_qconfig_mapping(backend)
    default = mapping.global_qconfig
    if not qat:  # choose the weight observer explicitly: per output channel or one scale per tensor
        weight = default_per_channel_weight_observer if per_channel else default_weight_observer
        mapping.set_global(QConfig(activation=default.activation, weight=weight))
    elif not per_channel:
        from torch.ao.quantization import default_weight_fake_quant

        mapping.set_global(QConfig(activation=default.activation, weight=default_weight_fake_quant))
    for name in config["skip_layers"]:
        mapping.set_module_name(name, None)
    return mapping


def _static_snippet(spec: TorchStaticSpec, recipe: dict, var: str) -> str:
    return textwrap.dedent(
        f"""
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        torch.backends.quantized.engine = "{spec.backend}"
        prepared = prepare_fx(model.eval(), get_default_qconfig_mapping("{spec.backend}"), example_inputs=(example,))
        with torch.no_grad():
            for images, _ in batches:
                prepared(images)
        model = convert_fx(prepared)  # real int8 modules; save with torch.jit.save(torch.jit.trace(model, example), ...)
        """
    )


def _static_latency_note(*, spec: TorchStaticSpec, result, timed_artifact: bool) -> str:
    where = "the exported TorchScript file" if timed_artifact else "the converted PyTorch module"
    trained = ", after quantization-aware training," if spec.workflow == "fine_tune" else ""
    return (
        f"torch_static runs on real int8 CPU kernels ({spec.backend} backend){trained}; timed {where} against the "
        "eager fp32 module: the ratio is a real speed-up on this CPU."
    )


def torch_static(module: nn.Module, spec: TorchStaticSpec, context: CompressionContext) -> CompressionResult:
    started = time.perf_counter()
    set_engine(spec.backend)
    plans = plan_layers(module, spec, _static_check)
    qat = spec.workflow == "fine_tune"
    example = (context.example_input(),)
    plan = plan_fine_tune(spec=spec, context=context, what="torch_static fine_tune (QAT)") if qat else None
    recipe = static_library_config(spec, layers=_static_layers(plans), fine_tune_steps=plan.total_steps if plan else None)
    config = recipe["config"]
    with context.library_logging():
        try:
            if qat:
                prepared = prepare_qat_fx(module.train(), _qconfig_mapping(config, qat=True), example_inputs=example)
                freeze_bn_at, freeze_observers_at = config["freeze_bn_at"], config["freeze_observers_at"]

                def after_step(step: int) -> None:
                    if step == freeze_bn_at:
                        prepared.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
                    if step == freeze_observers_at:
                        prepared.apply(disable_observer)

                fine_tune(module=prepared, spec=spec, context=context, plan=plan, after_step=after_step, label="int8 QAT (torch.ao)")
            else:
                prepared = prepare_fx(module.eval(), _qconfig_mapping(config, qat=False), example_inputs=example)
                context.run_calibration(
                    prepared, samples=spec.calibration_samples, seed=spec.seed, label="calibrating activation ranges"
                )
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
    layers, weights = torch_reports(context=context, compressed=quantized, plans=plans, method="torch_static")
    adds = sum(1 for node in quantized.graph.nodes if "quantized.add" in str(node.target))
    context.note(
        f"FX static int8 ({spec.backend}, {'per-channel' if spec.per_channel else 'per-tensor'} weights): "
        f"{len(quantized_modules)} int8 modules with Conv+BN(+ReLU) fused, {adds} quantized residual add(s); "
        "runs on real int8 CPU kernels."
    )
    return CompressionResult(
        module=quantized, spec=spec, seconds=time.perf_counter() - started, layers=layers, weights=weights,
        runs_int8_kernels=True, calibration_source=context.calibration_source, quantized_engine=spec.backend,
        library_config=recipe,
    )


DESCRIPTOR = register_method(
    MethodDescriptor(
        name="torch_static",
        label="PyTorch static int8",
        color="#f58518",
        source="PyTorch FX static int8 (fused Conv+BN+ReLU, quantized residual adds), as in a PyTorch ResNet-34 "
        "quantization report",
        spec_type=TorchStaticSpec,
        handler=torch_static,
        eligibility=lambda spec: _static_check,
        library_config=static_library_config,
        snippet=_static_snippet,
        storage=STORAGE_LINEAR,
        latency_note=_static_latency_note,
        runs_int8_kernels=True,
        artifact_kind=ARTIFACT_TORCHSCRIPT,
        layers_from_plans=_static_layers,
    )
)
