"""PyTorch FX graph-mode static int8 (torch.ao ``prepare_fx`` / ``prepare_qat_fx`` → ``convert_fx``): fused
Conv+BN(+ReLU), quantized residual adds, real int8 CPU kernels.

Conv(+BN)+ReLU6 (and hardtanh(0, 6)), which torch.ao's backend configs do not fuse, runs as one fused Conv+ReLU
kernel too: its output is quantized with fixed parameters (scale 6/255, zero point 0), so the kernel's clamp to
0..255 is exactly the ReLU6 (core.compress.torch_ao, ``fuse_relu6``); in QAT a fake-quantize with the same fixed
parameters clamps at 6 during training. The fbgemm engine is then left out of the timed forms (its depthwise kernel
can saturate on those full-range inputs); no fusion when the spec forces fbgemm or the CPU lacks VNNI/AMX
(relu6_fusion_blocker says why).

* calibration → observers on calibration batches
* fine_tune   → quantization-aware training in the shared fine-tuning loop (BatchNorm and observers freeze late)

The int8 model then runs in the fastest form on this machine: quantized engine (x86 / onednn / fbgemm) × graph form
(FX GraphModule / traced + frozen TorchScript), timed once per machine and model and cached
(core.compress.int8_forms); ``engine`` / ``graph`` in the spec force one. The result's module *is* that form, so the
evaluation, the latency and the exported TorchScript are all of it, and the record's ``int8_form`` says which won
and by how much. The torch.ao calls themselves live in core.compress.torch_ao.
"""

from __future__ import annotations

import copy
import textwrap
import time

import torch
from torch import nn

from core.compress.context import CompressionContext, CompressionError
from core.compress.finetune import fine_tune, plan_fine_tune
from core.compress.int8_forms import AUTO, candidate_forms, choose_int8_form, cpu_int8_features
from core.compress.layers import LayerPlan, as_plain_layers, note_plain_layers, plan_layers
from core.compress.library_config import LayerSpecs, count_fine_tune_steps
from core.compress.pt2e import captured_engine, first_line, graph_engine, is_trace_failure
from core.compress.registry import ARTIFACT_TORCHSCRIPT, STORAGE_LINEAR, MethodDescriptor, register_method
from core.compress.result import CompressionResult
from core.compress.torch_ao import (
    FX_DEPRECATION_NOTE,
    QUANTIZED_TYPES,
    fx_convert,
    fx_disable_observers,
    fx_freeze_bn_stats,
    fx_prepare,
    fx_relu6_fused,
    set_engine,
    torch_reports,
)
from core.specs import TorchStaticSpec

# Engines whose int8 forms are timed against each other; qnnpack (ARM) runs as it always did.
_TIMED_BACKENDS = ("x86", "fbgemm", "onednn")


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
        # the int8 form it runs in: "auto" = timed on this machine (core.compress.int8_forms), else forced
        "engine": spec.engine if spec.backend in _TIMED_BACKENDS else spec.backend,
        "graph": spec.graph if spec.backend in _TIMED_BACKENDS else "graph_module",
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


def _static_snippet(spec: TorchStaticSpec, config_entry: dict, var: str) -> str:
    config = config_entry["config"]
    engine, graph = config["engine"], config["graph"]
    if engine == AUTO:
        engine_line = 'engine = "x86"  # the studio times x86 / onednn / fbgemm here and keeps the fastest (record: int8_form)'
    else:
        engine_line = f'engine = "{engine}"  # forced by the spec'
    if graph == "graph_module":
        graph_lines = "# graph form: the FX GraphModule (forced by the spec)"
    else:
        why = "forced by the spec" if graph == "frozen_torchscript" else "often the faster graph form; the studio times both"
        graph_lines = f"model = torch.jit.freeze(torch.jit.trace(model, example).eval())  # {why}"
    return textwrap.dedent(
        f"""
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        torch.backends.quantized.engine = "{spec.backend}"
        # (the studio also runs each Conv(+BN)→ReLU6 as one fused Conv+ReLU kernel whose output is quantized with the
        # fixed scale 6/255, zero point 0 — the kernel's clamp is the ReLU6; core.compress.torch_ao, fuse_relu6)
        prepared = prepare_fx(model.eval(), get_default_qconfig_mapping("{spec.backend}"), example_inputs=(example,))
        with torch.no_grad():
            for images, _ in batches:
                prepared(images)
        {engine_line}
        torch.backends.quantized.engine = engine  # the engine in force at convert_fx packs the weights; run under it
        model = convert_fx(prepared)  # real int8 modules
        {graph_lines}
        """
    )


def _static_latency_note(*, spec: TorchStaticSpec, result, timed_artifact: bool) -> str:
    where = "the exported TorchScript file" if timed_artifact else "the int8 module in its chosen form"
    trained = ", after quantization-aware training," if spec.workflow == "fine_tune" else ""
    form = (getattr(result, "int8_form", None) or {}).get("label") or f"{spec.backend} engine"
    return (
        f"torch_static runs on real int8 CPU kernels ({form}){trained}; timed {where} against the eager fp32 module: "
        "the ratio is a real speed-up on this CPU, against PyTorch fp32 eager only (other fp32 runtimes may be faster)."
    )


# fbgemm's depthwise int8 convolution sums u8×s8 pairs in int16 (AVX2 vpmaddubsw) even on VNNI/AMX CPUs: inputs
# above 127 (what a fused ReLU6 writes: 0..255 for 0..6) can saturate it (measured: 49 quantization steps off on a
# 3×3 depthwise conv with inputs at 6 and extreme weights; the x86 and onednn engines exact). The x86 and fbgemm
# qconfigs keep activations in 0..127 for this reason.
FBGEMM_SATURATES = (
    "its depthwise int8 kernel sums u8×s8 pairs in int16 and can saturate on the full-range uint8 output of a "
    "conv with ReLU6 fused (0..255 for 0..6)"
)


def relu6_fusion_blocker(spec: TorchStaticSpec) -> str | None:
    """Why ReLU6 cannot run inside the fused conv kernel for this spec on this CPU (None: it can).

    The fused output spans the full quint8 range and is the next layer's input. fbgemm's depthwise kernel (and,
    without VNNI/AMX, the x86 engine's fbgemm path) can saturate on such inputs; with fusion on, torch_static leaves
    the fbgemm engine out of the timed forms (qnnpack and onednn quantize activations in the full range anyway)."""
    if spec.backend == "qnnpack":
        return None
    if spec.engine == "fbgemm":
        return f"ReLU6 left as separate int8 kernels: the spec forces the fbgemm engine, and {FBGEMM_SATURATES}"
    features = cpu_int8_features()
    if features.is_x86 and not (features.vnni or features.amx):
        return (
            f"ReLU6 left as separate int8 kernels: this CPU ({features.model}) has no VNNI/AMX, so int8 dot products "
            "go through int16 pair sums that can saturate on a fused conv's full-range uint8 output"
        )
    return None


def _calibrated(module: nn.Module, spec: TorchStaticSpec, context: CompressionContext, plans, config_entry: dict, plan):
    """The prepared model after calibration (observers) or QAT (fake quantization), in eval mode."""
    config = config_entry["config"]
    qat = spec.workflow == "fine_tune"
    blocker = relu6_fusion_blocker(spec)
    if blocker is not None and any(isinstance(m, nn.Hardtanh) for m in module.modules()):  # ReLU6 is a Hardtanh
        context.note(blocker + ".")
    prepared = fx_prepare(
        module, qat=qat, backend=spec.backend, per_channel=spec.per_channel, skip_layers=config["skip_layers"],
        example_inputs=(context.example_input(),), fuse_relu6=blocker is None,
    )
    if qat:
        freeze_bn_at, freeze_observers_at = config["freeze_bn_at"], config["freeze_observers_at"]

        def after_step(step: int) -> None:
            if step == freeze_bn_at:
                fx_freeze_bn_stats(prepared)
            if step == freeze_observers_at:
                fx_disable_observers(prepared)

        fine_tune(module=prepared, spec=spec, context=context, plan=plan, after_step=after_step, label="int8 QAT (torch.ao)")
    else:
        context.run_calibration(prepared, samples=spec.calibration_samples, seed=spec.seed, label="calibrating activation ranges")
    return prepared.eval()


def _calibrated_or_captured(module: nn.Module, spec: TorchStaticSpec, context: CompressionContext, plans, config_entry: dict,
                            plan, *, graph_form: bool):
    """_calibrated on the module; when FX cannot trace a Python module, on the module-level view of its
    torch.export capture instead (core.compress.pt2e; the notes say so)."""
    try:
        return _calibrated(module, spec, context, plans, config_entry, plan)
    except Exception as exc:
        if graph_form or not is_trace_failure(exc):
            raise
        choice = captured_engine(module, context=context, fx_error=exc)
    context.note(choice.note)
    return _calibrated(choice.module, spec, context, plans, config_entry, plan)


def torch_static(module: nn.Module, spec: TorchStaticSpec, context: CompressionContext) -> CompressionResult:
    started = time.perf_counter()
    set_engine(spec.backend)
    timed = spec.backend in _TIMED_BACKENDS
    if timed:
        candidate_forms(engine=spec.engine, graph=spec.graph)  # a forced engine this CPU lacks fails before any work
    choice = graph_engine(module, context=context)  # graph forms: FX on their module-level view
    if choice is not None:
        module = choice.module
        context.note(choice.note)
    note_plain_layers(context, as_plain_layers(module))
    plans = plan_layers(module, spec, _static_check)
    qat = spec.workflow == "fine_tune"
    plan = plan_fine_tune(spec=spec, context=context, what="torch_static fine_tune (QAT)") if qat else None
    config_entry = static_library_config(spec, layers=_static_layers(plans), fine_tune_steps=plan.total_steps if plan else None)
    with context.library_logging():
        try:
            prepared = _calibrated_or_captured(module, spec, context, plans, config_entry, plan, graph_form=choice is not None)
            quantized = fx_convert(copy.deepcopy(prepared))  # the GraphModule the per-layer report reads
        except (torch.fx.proxy.TraceError, NotImplementedError, RuntimeError) as exc:
            raise CompressionError(
                f"FX graph mode could not quantize this model ({first_line(exc)}); it needs a symbolically traceable "
                "forward. Use torch_dynamic or a weight-only method instead."
            ) from None
    quantized_modules = [n for n, m in quantized.named_modules() if isinstance(m, QUANTIZED_TYPES)]
    if not quantized_modules:
        raise CompressionError("FX static quantization produced no int8 modules; nothing runs on int8 kernels.")
    layers, weights = torch_reports(context=context, compressed=quantized, plans=plans, method="torch_static")
    adds = sum(1 for node in quantized.graph.nodes if "quantized.add" in str(node.target))
    relu6 = len(fx_relu6_fused(prepared))
    relu6_text = (
        f", {relu6} ReLU6 inside their conv's kernel (output quantized to 0..6 in 1/255-ths of 6, so the kernel's "
        "clamp is the ReLU6)" if relu6 else ""
    )
    context.note(
        f"FX static int8 ({spec.backend} qconfig, {'per-channel' if spec.per_channel else 'per-tensor'} weights): "
        f"{len(quantized_modules)} int8 modules with Conv+BN(+ReLU) fused{relu6_text}, {adds} quantized residual "
        "add(s); runs on real int8 CPU kernels."
    )
    context.note(FX_DEPRECATION_NOTE)
    runnable, engine, form = quantized, spec.backend, None
    if timed:
        with context.library_logging():
            choice = choose_int8_form(
                prepared=prepared, convert=fx_convert, example=context.example_input(1), engine=spec.engine,
                graph=spec.graph, spec=_form_cache_spec(spec), progress=context.progress.sub(0.85, 1.0),
                timing_guard=context.timing_guard, cache_root=context.cache_root,
                leave_out={"fbgemm": FBGEMM_SATURATES} if relu6 else None,
            )
        runnable, engine, form = choice.module, choice.winner.engine, choice.to_dict()
        form["artifact"] = _artifact_form(choice.winner.graph)
        context.note(f"int8 form: {choice.summary()}")
    set_engine(engine)  # ops without packed weights (quantize, add) dispatch on the global engine
    return CompressionResult(
        module=runnable, spec=spec, seconds=time.perf_counter() - started, layers=layers, weights=weights,
        runs_int8_kernels=True, calibration_source=context.calibration_source, quantized_engine=engine,
        library_config=config_entry, int8_form=form,
        payload_module=quantized if isinstance(runnable, torch.jit.ScriptModule) else None,
    )


def _form_cache_spec(spec: TorchStaticSpec) -> dict:
    """The spec fields that can change which form is fastest (the weights' values cannot)."""
    return {"backend": spec.backend, "per_channel": spec.per_channel, "workflow": spec.workflow, "skip": sorted(
        pattern for pattern, partial in spec.overrides.items() if partial is None)}


def _artifact_form(graph: str) -> str:
    if graph == "frozen_torchscript":
        return "the exported .pt is this traced + frozen TorchScript module as run and timed"
    return "the exported .pt is the trace of this GraphModule (TorchScript files hold graphs, not Python modules)"


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
        home_text="Weights *and* activations in int8 so the CPU runs integer kernels — the one that gets faster here.",
    )
)
