"""W8A8: int8 weights (per channel) and int8 activations with coremltools' LinearQuantizer.

* calibration → observers only, no backward pass (the milestones recipe of the ResNet-50 optimisation guide:
  step once to enable statistics and freeze BatchNorm, then run calibration batches)
* fine_tune   → quantization-aware training in the shared fine-tuning loop
The result is a reference-quantized FX graph: PyTorch simulates int8 (quantize → dequantize), ct.convert turns
it into a W8A8 Core ML program.
"""

from __future__ import annotations

import time

import torch
from coremltools.optimize.torch.quantization import LinearQuantizer, LinearQuantizerConfig, ModuleLinearQuantizerConfig
from torch import nn

from core.compress.context import CompressionContext, CompressionError
from core.compress.finetune import fine_tune, plan_fine_tune
from core.compress.layers import LayerFacts, library_result, plan_layers, threshold_reason
from core.compress.result import CompressionResult
from core.specs import QuantizeActivationsSpec

SUPPORTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _check(name: str, layer: nn.Module, layer_spec: QuantizeActivationsSpec) -> str | None:
    if not isinstance(layer, SUPPORTED):
        return f"unsupported op: coremltools LinearQuantizer does not quantize {type(layer).__name__}"
    return threshold_reason(layer.weight.numel(), layer_spec.weight_threshold)


def _scheme(spec: QuantizeActivationsSpec) -> str:
    return "symmetric" if spec.mode == "symmetric" else "affine"


def quantize_activations(module: nn.Module, spec: QuantizeActivationsSpec, context: CompressionContext) -> CompressionResult:
    started = time.perf_counter()
    plans = plan_layers(module, spec, _check)
    if not any(p.eligible for p in plans.values()):
        raise CompressionError("no layer qualifies for W8A8 quantization (check weight_threshold and overrides).")
    if any(p.eligible and p.spec.mode != spec.mode for p in plans.values()):
        raise CompressionError(
            "LinearQuantizer uses one quantization scheme for the whole model; remove the per-layer 'mode' override."
        )
    fine_tuning = spec.workflow == "fine_tune"
    plan = plan_fine_tune(spec=spec, context=context, what="quantize_activations fine_tune (QAT)") if fine_tuning else None
    if fine_tuning:
        total = plan.total_steps
        milestones = [0, 0, max(1, int(total * 0.8)), max(1, total // 2)]
    else:
        # statistics from step 0, fake-quant never during calibration, BatchNorm frozen at once
        milestones = [0, 1000, 1000, 0]

    def layer_config(layer_spec: QuantizeActivationsSpec) -> ModuleLinearQuantizerConfig:
        return ModuleLinearQuantizerConfig(
            quantization_scheme=_scheme(layer_spec), weight_per_channel=True, milestones=milestones
        )

    config = LinearQuantizerConfig(
        global_config=layer_config(spec),
        module_name_configs={n: None for n, p in plans.items() if not p.eligible},  # plain names (get_submodule)
    )
    with context.library_logging():
        quantizer = LinearQuantizer(module, config)
        prepared = quantizer.prepare(example_inputs=(context.example_input(),), inplace=True)
        quantizer.step()
        if fine_tuning:
            fine_tune(
                module=prepared, spec=spec, context=context, plan=plan,
                after_step=lambda _step: quantizer.step(), label="W8A8 QAT fine-tuning",
            )
        else:
            batches = context.calibration_batches(samples=spec.calibration_samples, seed=spec.seed)
            with torch.no_grad():
                for index, (inputs, _labels) in enumerate(batches):
                    prepared(inputs)
                    context.progress.update((index + 1) / len(batches), "W8A8: collecting activation ranges")
        prepared.eval()
        module = quantizer.finalize(inplace=True)
    activation_quantizers = sum(
        1 for node in module.graph.nodes if node.op == "call_function" and "quantize_per_tensor" in str(node.target)
    )
    context.note(
        f"{activation_quantizers} activation tensors are quantized to 8 bits ({_scheme(spec)}); PyTorch simulates "
        "them (quantize → dequantize), so CPU latency in PyTorch does not drop — the int8 compute happens on "
        "Apple's Neural Engine after conversion."
    )
    facts = {n: LayerFacts(extra={"activations": "int8", "workflow": spec.workflow}) for n, p in plans.items() if p.eligible}
    return library_result(
        module=module, spec=spec, plans=plans, facts=facts, context=context, method="quantize_activations", started=started
    )
