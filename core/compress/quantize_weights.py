"""Weight-only linear quantization (int8 / int4, per channel or per block, symmetric or asymmetric).

* data_free   → coremltools.optimize.torch PostTrainingQuantizer
* calibration → GPTQ (coremltools.optimize.torch.layerwise_compression) with Hessians from calibration data
* fine_tune   → quantization-aware training with LinearQuantizer, weights only (activations stay float)
"""

from __future__ import annotations

import time

import torch
from coremltools.optimize.torch._utils.metadata_utils import register_metadata_version
from coremltools.optimize.torch.layerwise_compression import GPTQ, ModuleGPTQConfig
from coremltools.optimize.torch.quantization import (
    LinearQuantizer,
    LinearQuantizerConfig,
    ModuleLinearQuantizerConfig,
    ModulePostTrainingQuantizerConfig,
    PostTrainingQuantizer,
    PostTrainingQuantizerConfig,
)
from torch import nn

from core.compress.context import CompressionContext
from core.compress.finetune import fine_tune, plan_fine_tune
from core.compress.layers import (
    EligibilityCheck,
    LayerFacts,
    LayerPlan,
    basic_ineligibility,
    exact_name_pattern,
    library_result,
    plan_layers,
)
from core.compress.result import CompressionResult
from core.specs import QuantizeWeightsSpec

PTQ_MODULES = PostTrainingQuantizer._supported_modules
GPTQ_MODULES = (nn.Conv2d, nn.Linear)
QAT_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


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


def quantize_weights(module: nn.Module, spec: QuantizeWeightsSpec, context: CompressionContext) -> CompressionResult:
    started = time.perf_counter()
    plans = plan_layers(module, spec, eligibility(spec))
    eligible = {name: plan for name, plan in plans.items() if plan.eligible}
    if eligible:
        if spec.workflow == "data_free":
            module = _post_training(module, eligible, context)
        elif spec.workflow == "calibration":
            _gptq(module, spec, eligible, context)
        else:
            module = _qat(module, spec, plans, context)
    else:
        context.note("No layer qualified for weight quantization; the model is unchanged.")
    facts = {
        name: LayerFacts(extra={"dtype": p.spec.dtype, "mode": p.spec.mode, "workflow": spec.workflow}
                         | ({"block_size": p.spec.block_size} if p.spec.granularity == "per_block" else {}))
        for name, p in eligible.items()
    }
    return library_result(
        module=module, spec=spec, plans=plans, facts=facts, context=context, method="quantize_weights", started=started
    )


def _scheme(spec: QuantizeWeightsSpec) -> str:
    return "symmetric" if spec.mode == "symmetric" else "affine"


def _post_training(module: nn.Module, eligible: dict[str, LayerPlan], context: CompressionContext) -> nn.Module:
    configs = {
        exact_name_pattern(n): ModulePostTrainingQuantizerConfig(
            weight_dtype=p.spec.dtype,
            granularity=p.spec.granularity,
            quantization_scheme=_scheme(p.spec),
            block_size=p.spec.block_size if p.spec.granularity == "per_block" else None,
        )
        for n, p in eligible.items()
    }
    context.progress.update(0.1, f"quantizing {len(eligible)} layers")
    with context.library_logging():
        module = PostTrainingQuantizer(module, PostTrainingQuantizerConfig(module_name_configs=configs)).compress(inplace=True)
    context.progress.update(1.0, "quantized")
    return module


def _gptq(module: nn.Module, spec: QuantizeWeightsSpec, eligible: dict[str, LayerPlan], context: CompressionContext) -> None:
    """GPTQ per layer with Hessians from the calibration data.

    coremltools' LayerwiseCompressor needs a strictly sequential model (each child feeding the next), which
    ResNets are not; so the library's GPTQ algorithm runs on every eligible layer with statistics collected in
    one pass through the whole (uncompressed) model.
    """
    batches = context.calibration_batches(samples=spec.calibration_samples, seed=spec.seed)
    algorithms: dict[str, GPTQ] = {}
    handles = []
    with context.library_logging():
        for name, plan in eligible.items():
            layer = module.get_submodule(name)
            config = ModuleGPTQConfig(
                weight_dtype="uint8" if plan.spec.dtype == "int8" else "uint4",
                granularity=plan.spec.granularity,
                quantization_scheme=_scheme(plan.spec),
                block_size=plan.spec.block_size if plan.spec.granularity == "per_block" else None,
            )
            algorithm = GPTQ(layer, config)
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


def _qat(module: nn.Module, spec: QuantizeWeightsSpec, plans: dict[str, LayerPlan], context: CompressionContext) -> nn.Module:
    plan = plan_fine_tune(spec=spec, context=context, what="quantize_weights fine_tune (QAT)")
    total = plan.total_steps
    # observers and fake-quant on from step 0; observers frozen at 80 % and BatchNorm statistics at 50 % of training
    milestones = [0, 0, max(1, int(total * 0.8)), max(1, total // 2)]
    def layer_config(layer_spec: QuantizeWeightsSpec) -> ModuleLinearQuantizerConfig:
        return ModuleLinearQuantizerConfig(
            weight_dtype="qint8" if layer_spec.dtype == "int8" else "qint4",
            weight_per_channel=True,
            activation_dtype="float32",  # weight-only: activations stay float
            quantization_scheme=_scheme(layer_spec),
            milestones=milestones,
        )

    # LinearQuantizer looks module names up with get_submodule: plain names, not patterns.
    default = layer_config(spec)
    overrides = {n: None if not p.eligible else layer_config(p.spec) for n, p in plans.items()}
    config = LinearQuantizerConfig(
        global_config=default,
        module_name_configs={n: c for n, c in overrides.items() if c is None or c != default},
    )
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
