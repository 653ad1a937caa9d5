"""W8A8: int8 weights (per channel, or per tensor with ``weight_per_channel`` off) and int8 activations with coremltools' LinearQuantizer.

* calibration → observers only, no backward pass (the milestones schedule of the ResNet-50 optimisation guide:
  step once to enable statistics and freeze BatchNorm, then run calibration batches)
* fine_tune   → quantization-aware training in the shared fine-tuning loop
The result is a reference-quantized FX graph: PyTorch simulates int8 (quantize → dequantize), ct.convert turns
it into a W8A8 Core ML program.
"""

from __future__ import annotations

import dataclasses
import time

from coremltools.optimize.torch.quantization import LinearQuantizer
from torch import nn

from core.compress import snippets
from core.compress.context import CompressionContext, CompressionError
from core.compress.finetune import fine_tune, plan_fine_tune
from core.compress.layers import (
    LayerFacts,
    as_plain_layers,
    library_result,
    note_plain_layers,
    plan_layers,
    threshold_reason,
)
from core.compress.library_config import LayerSpecs, count_fine_tune_steps, layer_specs, load_config, qat_milestones
from core.compress.pt2e import (
    captured_engine,
    graph_engine,
    is_trace_failure,
    keep_in_inference_mode,
    training_branch_randomness,
)
from core.compress.quantize_weights import linear_quantizer_entry
from core.compress.registry import STORAGE_LINEAR, MethodDescriptor, register_method
from core.compress.result import CompressionResult
from core.specs import QuantizeActivationsSpec

SUPPORTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
# statistics from step 0, fake-quant never during calibration, BatchNorm frozen at once
CALIBRATION_MILESTONES = [0, 1000, 1000, 0]


def eligibility(spec: QuantizeActivationsSpec):
    return _check


def _check(name: str, layer: nn.Module, layer_spec: QuantizeActivationsSpec) -> str | None:
    if not isinstance(layer, SUPPORTED):
        return f"unsupported op: coremltools LinearQuantizer does not quantize {type(layer).__name__}"
    return threshold_reason(layer.weight.numel(), layer_spec.weight_threshold)


def _scheme(spec: QuantizeActivationsSpec) -> str:
    return "symmetric" if spec.mode == "symmetric" else "affine"


# --------------------------------------------------------------------------- spec → library config (the one place)


def library_config(
    spec: QuantizeActivationsSpec, *, layers: LayerSpecs | None = None, fine_tune_steps: int | None = None
) -> dict:
    """LinearQuantizerConfig with int8 activations: observer-only milestones for calibration, QAT milestones
    from the fine-tune's step count."""
    steps = None
    if spec.workflow == "fine_tune":
        steps = fine_tune_steps if fine_tune_steps is not None else count_fine_tune_steps(spec)
        milestones = qat_milestones(steps)
    else:
        milestones = CALIBRATION_MILESTONES

    def module_config(layer_spec: QuantizeActivationsSpec) -> dict:
        return {
            "quantization_scheme": _scheme(layer_spec),
            "weight_per_channel": layer_spec.weight_per_channel,
            "milestones": milestones,
        }

    if layers is not None:  # one scheme for the whole model: listed are the skipped layers and weight-granularity overrides
        layers = {
            name: None if layer_spec is None else dataclasses.replace(spec, weight_per_channel=layer_spec.weight_per_channel)
            for name, layer_spec in layers.items()
        }
    return linear_quantizer_entry(spec, module_config, layers=layers, fine_tune_steps=steps)


def snippet(spec: QuantizeActivationsSpec, config_entry: dict, var: str) -> str:
    head = snippets.head(spec, config_entry, var, plain_names=True)
    if spec.workflow == "fine_tune":
        return head + snippets.fine_tune_loop(spec, config_entry, var, prepare_args="example_inputs=(example,), inplace=True")
    return head + f"""
quantizer = LinearQuantizer(model, {snippets.build_expression(config_entry, var)})
prepared = quantizer.prepare(example_inputs=(example,), inplace=True)
quantizer.step()  # milestone 0: observers on; milestone 3: BatchNorm frozen
with torch.no_grad():
    for images, _ in batches:
        prepared(images)
prepared.eval()
model = quantizer.finalize(inplace=True)
"""


def latency_note(*, spec: QuantizeActivationsSpec, result, timed_artifact: bool) -> str:
    trained = " after quantization-aware training" if spec.workflow == "fine_tune" else ""
    return (
        f"W8A8 is simulated with fake-quantization in PyTorch{trained}: a rewritten FX graph with "
        "quantize/dequantize ops around every layer running float math, so on the CPU it is slower than fp32, not "
        "faster; int8×int8 compute happens only on Apple hardware (Neural Engine) running the .mlpackage."
    )


# --------------------------------------------------------------------------- handler


def quantize_activations(module: nn.Module, spec: QuantizeActivationsSpec, context: CompressionContext) -> CompressionResult:
    """FX graph mode on the Python module; on the module-level view of a graph-form model, or of a torch.export
    capture when FX cannot trace the module (core.compress.pt2e; the notes name the engine)."""
    started = time.perf_counter()
    choice = graph_engine(module, context=context)
    if choice is not None:
        context.note(choice.note)
        return _quantize(choice.module, spec, context, started)
    note_plain_layers(context, as_plain_layers(module))
    randomness = training_branch_randomness(module)
    if "" in randomness:  # random ops in the model's own forward: only an inference-mode capture leaves them out
        choice = captured_engine(module, context=context, fx_error=(
            f"its training-mode trace would keep {randomness['']} in the quantized graph, random in inference"))
        context.note(choice.note)
        return _quantize(choice.module, spec, context, started)
    if randomness:
        for path in randomness:
            keep_in_inference_mode(module.get_submodule(path))
        context.note(
            f"{len(randomness)} module(s) with training-only randomness kept in inference mode while FX traces the "
            f"model (first: {next(iter(randomness))}, {next(iter(randomness.values()))}): a training-mode trace would "
            "keep their random drop in the quantized graph for good."
        )
    try:
        return _quantize(module, spec, context, started)
    except Exception as exc:
        if not is_trace_failure(exc):
            raise
        choice = captured_engine(module, context=context, fx_error=exc)
    context.note(choice.note)
    return _quantize(choice.module, spec, context, started)


def _quantize(module: nn.Module, spec: QuantizeActivationsSpec, context: CompressionContext, started: float) -> CompressionResult:
    plans = plan_layers(module, spec, _check)
    if not any(p.eligible for p in plans.values()):
        raise CompressionError("no layer qualifies for W8A8 quantization (check weight_threshold and overrides).")
    if any(p.eligible and p.spec.mode != spec.mode for p in plans.values()):
        raise CompressionError(
            "LinearQuantizer uses one quantization scheme for the whole model; remove the per-layer 'mode' override."
        )
    fine_tuning = spec.workflow == "fine_tune"
    plan = plan_fine_tune(spec=spec, context=context, what="quantize_activations fine_tune (QAT)") if fine_tuning else None
    config_entry = library_config(spec, layers=layer_specs(plans), fine_tune_steps=plan.total_steps if plan else None)
    with context.library_logging():
        quantizer = LinearQuantizer(module, load_config(config_entry))
        prepared = quantizer.prepare(example_inputs=(context.example_input(),), inplace=True)
        quantizer.step()
        if fine_tuning:
            fine_tune(
                module=prepared, spec=spec, context=context, plan=plan,
                after_step=lambda _step: quantizer.step(), label="W8A8 QAT fine-tuning",
            )
        else:
            _dropout_off(prepared)
            context.run_calibration(
                prepared, samples=spec.calibration_samples, seed=spec.seed, label="W8A8: collecting activation ranges"
            )
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
    result = library_result(
        module=module, spec=spec, plans=plans, facts=facts, context=context, method="quantize_activations", started=started
    )
    result.library_config = config_entry
    return result


_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def _dropout_off(prepared: nn.Module) -> None:
    """LinearQuantizer calibrates in training mode (observers on, BatchNorm frozen by the milestones), which would
    leave dropout active: the layer after it would record ranges of randomly dropped, rescaled inputs."""
    for sub in prepared.modules():
        if isinstance(sub, _DROPOUTS):
            sub.eval()


DESCRIPTOR = register_method(
    MethodDescriptor(
        name="quantize_activations",
        label="W8A8 activations",
        color="#b279a2",
        source="coremltools' LinearQuantizer with int8 activations (the W8A8 setup of coremltools' ResNet50 guide)",
        spec_type=QuantizeActivationsSpec,
        handler=quantize_activations,
        eligibility=eligibility,
        library_config=library_config,
        snippet=snippet,
        storage=STORAGE_LINEAR,
        latency_note=latency_note,
    )
)
