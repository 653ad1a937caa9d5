"""Weight-only linear quantization (int8 / int4, per channel or per block, symmetric or asymmetric).

* data_free   → coremltools.optimize.torch PostTrainingQuantizer
* calibration → GPTQ (coremltools.optimize.torch.layerwise_compression) with Hessians from calibration data
* fine_tune   → quantization-aware training with LinearQuantizer, weights only (activations stay float)
"""

from __future__ import annotations

import textwrap
import time

import torch
from coremltools.optimize.torch.layerwise_compression import GPTQ
from coremltools.optimize.torch.quantization import LinearQuantizer, PostTrainingQuantizer
from torch import nn

from core.compress import latency_notes, snippets
from core.compress.context import CompressionContext
from core.compress.finetune import fine_tune, plan_fine_tune
from core.compress.layers import EligibilityCheck, LayerFacts, basic_ineligibility, library_result, plan_layers
from core.compress.library_config import (
    LayerSpecs,
    count_fine_tune_steps,
    entry,
    exact_name_configs,
    exact_name_pattern,
    layer_specs,
    load_config,
    pattern_configs,
    qat_milestones,
)
from core.compress.registry import STORAGE_LINEAR, CoreMLSide, MethodDescriptor, register_method
from core.compress.result import CompressionResult
from core.library_internals import post_training_quantizer_modules, register_metadata_version
from core.specs import QuantizeWeightsSpec

PTQ_MODULES = post_training_quantizer_modules()
GPTQ_MODULES = (nn.Conv2d, nn.Linear)
QAT_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_TORCH_OPT = "coremltools.optimize.torch"


def eligibility(spec: QuantizeWeightsSpec) -> EligibilityCheck:
    modules, api = {
        "data_free": (PTQ_MODULES, "PostTrainingQuantizer"),
        "calibration": (GPTQ_MODULES, "GPTQ"),
        "fine_tune": (QAT_MODULES, "LinearQuantizer"),
    }[spec.workflow]

    def check(name: str, layer: nn.Module, layer_spec: QuantizeWeightsSpec) -> str | None:
        reason = basic_ineligibility(
            layer, modules=modules, api=api, verb="quantize", threshold=layer_spec.weight_threshold
        )
        if reason:
            return reason
        weight = layer.weight
        if spec.workflow == "calibration" and isinstance(layer, nn.Conv2d) and layer.groups != 1:
            return f"grouped/depthwise conv (groups={layer.groups}) is not supported by GPTQ"
        if layer_spec.granularity == "per_block":
            in_axis = 0 if isinstance(layer, _TRANSPOSED) else 1
            channels = weight.shape[in_axis]
            if channels <= layer_spec.block_size or channels % layer_spec.block_size:
                return (
                    f"input channels ({channels}) must be larger than and divisible by block_size "
                    f"{layer_spec.block_size} for per_block quantization"
                )
        return None

    return check


# --------------------------------------------------------------------------- spec → library config (the one place)


def _scheme(spec: QuantizeWeightsSpec) -> str:
    return "symmetric" if spec.mode == "symmetric" else "affine"


def _block_size(spec: QuantizeWeightsSpec) -> int | None:
    return spec.block_size if spec.granularity == "per_block" else None


def _ptq_module_config(spec: QuantizeWeightsSpec) -> dict:
    return {
        "weight_dtype": spec.dtype,
        "granularity": spec.granularity,
        "quantization_scheme": _scheme(spec),
        "block_size": _block_size(spec),
    }


def _gptq_module_config(spec: QuantizeWeightsSpec) -> dict:
    return {
        "algorithm": "gptq",
        "weight_dtype": "uint8" if spec.dtype == "int8" else "uint4",
        "granularity": spec.granularity,
        "quantization_scheme": _scheme(spec),
        "block_size": _block_size(spec),
    }


def _qat_module_config(spec: QuantizeWeightsSpec, milestones: list[int]) -> dict:
    return {
        "weight_dtype": "qint8" if spec.dtype == "int8" else "qint4",
        "weight_per_channel": True,
        "activation_dtype": "float32",  # weight-only: activations stay float
        "quantization_scheme": _scheme(spec),
        "milestones": milestones,
    }


def library_config(
    spec: QuantizeWeightsSpec, *, layers: LayerSpecs | None = None, fine_tune_steps: int | None = None
) -> dict:
    """PostTrainingQuantizerConfig (data_free), LayerwiseCompressorConfig with GPTQ (calibration), or a weight-only
    LinearQuantizerConfig (fine_tune, milestones from the fine-tune's step count)."""
    if spec.workflow == "fine_tune":
        steps = fine_tune_steps if fine_tune_steps is not None else count_fine_tune_steps(spec)
        milestones = qat_milestones(steps)
        return linear_quantizer_entry(
            spec, lambda layer_spec: _qat_module_config(layer_spec, milestones), layers=layers, fine_tune_steps=steps
        )
    module_config = _ptq_module_config if spec.workflow == "data_free" else _gptq_module_config
    if layers is not None:
        config: dict = {"module_name_configs": exact_name_configs(layers, module_config)}
    else:
        config = {"global_config": module_config(spec)}
        if spec.overrides:
            config["module_name_configs"] = pattern_configs(spec, module_config)
    if spec.workflow == "calibration":
        config["calibration_nsamples"] = spec.calibration_samples
        module, api = f"{_TORCH_OPT}.layerwise_compression", "LayerwiseCompressor"
    else:
        module, api = f"{_TORCH_OPT}.quantization", "PostTrainingQuantizer"
    return entry(
        module=module, api=api, config_class=f"{api}Config", config=config, spec=spec,
        weight_threshold=spec.weight_threshold if layers is None and spec.weight_threshold else None,
    )


def linear_quantizer_entry(spec, module_config, *, layers: LayerSpecs | None, fine_tune_steps: int | None = None) -> dict:
    """A LinearQuantizerConfig entry. LinearQuantizer traces the whole model and looks module_name_configs up by
    plain module name, so the engine's form is the global config plus every layer that differs from it."""
    default = module_config(spec)
    config: dict = {"global_config": default}
    if layers is not None:
        per_layer = exact_name_configs(layers, module_config, escape=False, skipped=True)
        config["module_name_configs"] = {n: c for n, c in per_layer.items() if c is None or c != default}
    elif spec.overrides:
        config["module_name_configs"] = pattern_configs(spec, module_config)
    return entry(
        module=f"{_TORCH_OPT}.quantization", api="LinearQuantizer", config_class="LinearQuantizerConfig",
        config=config, spec=spec, fine_tune_steps=fine_tune_steps,
        weight_threshold=spec.weight_threshold if layers is None and spec.weight_threshold else None,
    )


def coreml_op_config(spec: QuantizeWeightsSpec) -> dict:
    """The Core ML-side OpLinearQuantizerConfig (uploaded .mlpackage files)."""
    return {
        "mode": "linear_symmetric" if spec.mode == "symmetric" else "linear",
        "dtype": spec.dtype,
        "granularity": spec.granularity,
        "block_size": spec.block_size,
        "weight_threshold": spec.weight_threshold,
    }


def snippet(spec: QuantizeWeightsSpec, config_entry: dict, var: str) -> str:
    build = snippets.build_expression(config_entry, var)
    if spec.workflow == "data_free":
        return snippets.head(spec, config_entry, var) + f"model = PostTrainingQuantizer(model, {build}).compress()\n"
    if spec.workflow == "calibration":
        return snippets.head(spec, config_entry, var) + textwrap.dedent(
            f"""
            # LayerwiseCompressor needs a sequential model (each child feeding the next); the app runs the same
            # GPTQ algorithm per layer for non-sequential networks.
            model = LayerwiseCompressor(model.eval(), {build}).compress([x for x, _ in batches], device="cpu")
            """
        )
    return snippets.head(spec, config_entry, var, plain_names=True) + snippets.fine_tune_loop(
        spec, config_entry, var, prepare_args="example_inputs=(example,), inplace=True"
    )


# --------------------------------------------------------------------------- handler


def quantize_weights(module: nn.Module, spec: QuantizeWeightsSpec, context: CompressionContext) -> CompressionResult:
    started = time.perf_counter()
    plans = plan_layers(module, spec, eligibility(spec))
    eligible = {name: plan for name, plan in plans.items() if plan.eligible}
    config_entry = None
    if eligible:
        if spec.workflow == "data_free":
            config_entry = library_config(spec, layers=layer_specs(plans))
            module = _post_training(module, load_config(config_entry), len(eligible), context)
        elif spec.workflow == "calibration":
            config_entry = library_config(spec, layers=layer_specs(plans))
            _gptq(module, spec, list(eligible), load_config(config_entry), context)
        else:
            plan = plan_fine_tune(spec=spec, context=context, what="quantize_weights fine_tune (QAT)")
            config_entry = library_config(spec, layers=layer_specs(plans), fine_tune_steps=plan.total_steps)
            module = _qat(module, spec, load_config(config_entry), context, plan)
    else:
        context.note("No layer qualified for weight quantization; the model is unchanged.")
    facts = {
        name: LayerFacts(extra={"dtype": p.spec.dtype, "mode": p.spec.mode, "workflow": spec.workflow}
                         | ({"block_size": p.spec.block_size} if p.spec.granularity == "per_block" else {}))
        for name, p in eligible.items()
    }
    result = library_result(
        module=module, spec=spec, plans=plans, facts=facts, context=context, method="quantize_weights", started=started
    )
    result.library_config = config_entry
    return result


def _post_training(module: nn.Module, config, count: int, context: CompressionContext) -> nn.Module:
    context.progress.update(0.1, f"quantizing {count} layers")
    with context.library_logging():
        module = PostTrainingQuantizer(module, config).compress(inplace=True)
    context.progress.update(1.0, "quantized")
    return module


def _gptq(module: nn.Module, spec: QuantizeWeightsSpec, names: list[str], config, context: CompressionContext) -> None:
    """GPTQ per layer with Hessians from the calibration data.

    coremltools' LayerwiseCompressor needs a strictly sequential model (each child feeding the next), which
    ResNets are not; so the library's GPTQ algorithm runs on every eligible layer, with the per-layer configs of
    the LayerwiseCompressorConfig, on statistics collected in one pass through the whole (uncompressed) model.
    """
    batches = context.calibration_batches(samples=spec.calibration_samples, seed=spec.seed)
    algorithms: dict[str, GPTQ] = {}
    handles = []
    with context.library_logging():
        for name in names:
            layer = module.get_submodule(name)
            algorithm = GPTQ(layer, config.module_name_configs[exact_name_pattern(name)])
            algorithms[name] = algorithm
            handles.append(layer.register_forward_hook(_hessian_hook(algorithm)))
        module.eval()
        with torch.no_grad():
            for index, (inputs, _labels) in enumerate(batches):
                module(inputs)
                context.progress.update(0.5 * (index + 1) / len(batches), "GPTQ: collecting Hessians")
        for handle in handles:
            handle.remove()
        for index, (name, algorithm) in enumerate(algorithms.items()):
            with torch.no_grad():
                algorithm.compress()
            algorithm.cleanup()
            context.progress.update(0.5 + 0.5 * (index + 1) / len(algorithms), f"GPTQ: {name}")
    register_metadata_version(module)
    context.note(
        "GPTQ (coremltools.optimize.torch) ran on every eligible layer with Hessians from one pass of the "
        "calibration data through the uncompressed model (not layer-sequential)."
    )


def _hessian_hook(algorithm: GPTQ):
    def hook(_layer: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        algorithm.add_batch(inputs[0].data, output.data)

    return hook


def _qat(module: nn.Module, spec: QuantizeWeightsSpec, config, context: CompressionContext, plan) -> nn.Module:
    with context.library_logging():
        quantizer = LinearQuantizer(module, config)
        prepared = quantizer.prepare(example_inputs=(context.example_input(),), inplace=True)
        quantizer.step()
        fine_tune(
            module=prepared, spec=spec, context=context, plan=plan,
            after_step=lambda _step: quantizer.step(), label="weight QAT fine-tuning",
        )
        module = quantizer.finalize(inplace=True)
    return module


DESCRIPTOR = register_method(
    MethodDescriptor(
        name="quantize_weights",
        label="Quantize weights",
        color="#54a24b",
        source="coremltools' linear quantization (PostTrainingQuantizer, GPTQ, weight-only LinearQuantizer QAT)",
        spec_type=QuantizeWeightsSpec,
        handler=quantize_weights,
        eligibility=eligibility,
        library_config=library_config,
        snippet=snippet,
        storage=STORAGE_LINEAR,
        latency_note=latency_notes.weight_only,
        coreml_side=CoreMLSide(
            op_config=coreml_op_config, config_type="OpLinearQuantizerConfig", function="linear_quantize_weights",
            knob="dtype", label="Integer type", help="Per-channel symmetric quantization.", key="dtype",
        ),
        home_text="Round weights onto an evenly spaced 8- or 4-bit integer grid with a scale per channel or block.",
        search_refinable=True,
    )
)
