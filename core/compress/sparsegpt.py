"""SparseGPT pruning with coremltools' layer-wise compressor (LayerwiseCompressor + ModuleSparseGPTConfig).

SparseGPT prunes each layer to its target sparsity and updates the surviving weights to undo the error, using the
Hessian of the layer's reconstruction loss on calibration inputs (Frantar & Alistarh, 2023). The library walks a
purely sequential model; a vision model branches (residual adds, functional forwards), so the handler runs it one
layer at a time: capture the inputs that layer sees in the partly pruned model, then let ``LayerwiseCompressor``
prune that one layer (wrapped as a one-layer ``nn.Sequential``). The exported snippet does exactly the same.

Everything about the method is in this module: its spec (the knobs), eligibility, library config, snippet, handler
and registration.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
import time
from typing import Any, ClassVar

import torch
from coremltools.optimize.torch.layerwise_compression import LayerwiseCompressor, LayerwiseCompressorConfig
from torch import nn

from core.compress import latency_notes, snippets
from core.compress.context import CompressionContext
from core.compress.layers import LayerFacts, basic_ineligibility, library_result, plan_layers
from core.compress.library_config import (
    LayerSpecs,
    entry,
    exact_name_configs,
    layer_specs,
    load_config,
    pattern_configs,
)
from core.compress.registry import STORAGE_SPARSE, MethodDescriptor, register_method
from core.compress.result import CompressionResult
from core.specs import (
    CompressionSpec,
    FormInfo,
    LayerWidget,
    PruneSpec,
    SpecError,
    check_n_m,
    knob,
    threshold_knob,
    workflow_knob,
)

SUPPORTED_MODULES = (nn.Conv2d, nn.Linear)  # the layer types LayerwiseCompressor compresses
CALIBRATION_BATCH = 32  # images per calibration batch (one element of the compressor's data loader)
# ct.convert stores a pruned weight sparsely by zeroing every |w| below fp16's epsilon; SparseGPT's re-fitted
# survivors can be that small, so the handler zeroes them too and the evaluated model is the exported one.
CONVERTER_ZERO_BELOW = torch.finfo(torch.float16).eps


@dataclasses.dataclass(frozen=True)
class SparseGPTSpec(CompressionSpec):
    """SparseGPT: one-shot pruning that corrects the surviving weights from calibration statistics."""

    method: ClassVar[str] = "sparsegpt"
    workflows: ClassVar[tuple[str, ...]] = ("calibration",)
    help: ClassVar[str] = ("prune each layer and re-fit its surviving weights to the layer's calibration inputs "
                           "(SparseGPT, coremltools' LayerwiseCompressor)")
    form: ClassVar[FormInfo] = FormInfo(
        tab="SparseGPT", key="sparsegpt",
        caption="Prune each layer and re-fit its surviving weights to the layer's calibration inputs (SparseGPT, "
        "coremltools' LayerwiseCompressor). Usually keeps more accuracy than magnitude pruning at the same sparsity; "
        "sparse storage as for Prune.",
        layer_widget=LayerWidget("target_sparsity", "Sparsity for those layers", 0.25,
                                 "e.g. prune a sensitive layer less."))

    workflow: str = workflow_knob("calibration")
    target_sparsity: float = knob(0.5, label="Target sparsity", minimum=0.0, maximum=1.0, high_open=True,
                                  form_range=(0.0, 0.95), step=0.05, slider_format="percent", unit="share of weights",
                                  per_layer=True, widget="slider", column=1, sweep=(0.5, 0.75),
                                  enabled_when={"structure": ("unstructured",)},
                                  help="Fraction of each layer's weights set to zero; the rest are re-fitted.")
    structure: str = knob("unstructured", label="Pattern", choices=("unstructured", "n_m"), per_layer=True,
                          widget="radio", column=0,
                          option_labels={"unstructured": "unstructured (any weight)", "n_m": "n:m (n of every m)"},
                          help="Unstructured keeps accuracy best; n:m suits hardware that skips zeros.")
    n_m: tuple[int, int] = dataclasses.field(default=(2, 4), metadata={"knob": dataclasses.replace(
        PruneSpec.knobs()["n_m"], column=1, enabled_when={"structure": ("n_m",)})})
    hessian_dampening: float = knob(0.01, label="Hessian dampening", minimum=0.0, maximum=1.0, low_open=True,
                                    options=(0.001, 0.003, 0.01, 0.03, 0.1), option_format="g", per_layer=True,
                                    widget="select_slider", column=2,
                                    help="Added to the Hessian's diagonal (× its mean) so the inverse is stable; "
                                    "larger is safer, smaller follows the data more closely.")
    processing_group_size: int = knob(128, label="Columns per block", minimum=1, options=(32, 64, 128, 256),
                                      unit="columns", per_layer=True, widget="select_slider", column=2,
                                      help="Weight columns pruned and corrected together; each block reaches the "
                                      "target sparsity on its own.")
    weight_threshold: int = threshold_knob(2048)

    def __post_init__(self) -> None:
        if isinstance(self.n_m, list):
            object.__setattr__(self, "n_m", tuple(self.n_m))
        super().__post_init__()

    def check_combination(self) -> None:
        check_n_m(self.n_m)
        m = self.n_m[1]
        if self.structure == "n_m" and self.processing_group_size % m:
            raise SpecError(f"processing_group_size ({self.processing_group_size}) must be a multiple of m ({m}) "
                            "for n:m sparsity.")

    @property
    def effective_sparsity(self) -> float:
        return self.n_m[0] / self.n_m[1] if self.structure == "n_m" else self.target_sparsity

    def summary(self) -> str:
        shape = f", {self.n_m[0]} of every {self.n_m[1]} weights" if self.structure == "n_m" else ""
        return f"{self.effective_sparsity * 100:.0f} % SparseGPT pruning{shape}, {self.workflow_words()}"


def eligibility(spec: SparseGPTSpec):
    return _check


def _check(name: str, layer: nn.Module, layer_spec: SparseGPTSpec) -> str | None:
    reason = basic_ineligibility(layer, modules=SUPPORTED_MODULES, api="LayerwiseCompressor", verb="prune",
                                 threshold=layer_spec.weight_threshold)
    if reason:
        return reason
    if isinstance(layer, nn.Conv2d) and layer.groups > 1:
        return (f"grouped convolution (groups={layer.groups}): SparseGPT's Hessian covers a dense convolution's "
                "inputs only")
    columns = layer.weight[0].numel()
    if layer_spec.structure == "n_m" and columns % layer_spec.n_m[1]:
        return f"weight columns ({columns}) not divisible by m={layer_spec.n_m[1]} for n:m sparsity"
    return None


# --------------------------------------------------------------------------- spec → library config (the one place)


def _module_config(spec: SparseGPTSpec) -> dict:
    return {
        "algorithm": "sparse_gpt",
        "target_sparsity": float(spec.effective_sparsity),
        "n_m_ratio": list(spec.n_m) if spec.structure == "n_m" else None,
        "weight_dtype": "float32",  # prune only: no quantizer (below 16 bits one would also quantize)
        "hessian_dampening": float(spec.hessian_dampening),
        "processing_group_size": int(spec.processing_group_size),
    }


def library_config(spec: SparseGPTSpec, *, layers: LayerSpecs | None = None, fine_tune_steps: int | None = None) -> dict:
    """LayerwiseCompressorConfig with ModuleSparseGPTConfig per layer (exact names) or globally (+ overrides)."""
    config: dict[str, Any] = {"calibration_nsamples": math.ceil(spec.calibration_samples / CALIBRATION_BATCH)}
    if layers is not None:
        config["module_name_configs"] = exact_name_configs(layers, _module_config, skipped=True)
    else:
        config["global_config"] = _module_config(spec)
        if spec.overrides:
            config["module_name_configs"] = pattern_configs(spec, _module_config)
    return entry(
        module="coremltools.optimize.torch.layerwise_compression", api="LayerwiseCompressor",
        config_class="LayerwiseCompressorConfig", config=config, spec=spec,
        weight_threshold=spec.weight_threshold if layers is None and spec.weight_threshold else None,
    )


def snippet(spec: SparseGPTSpec, config_entry: dict, var: str) -> str:
    return snippets.head(spec, config_entry, var) + textwrap.dedent(
        f"""
        # SparseGPT one layer at a time: the inputs each layer sees in the partly pruned model (`batches`: the
        # calibration images in batches of {CALIBRATION_BATCH}), then LayerwiseCompressor on that layer alone.
        config = {snippets.build_expression(config_entry, var)}
        layers = [(name, layer) for name, layer in model.named_modules() if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear))]
        for name, layer in layers:
            layer_config = config.get_module_config(name, layer)
            if layer_config is None:
                continue
            seen = []
            handle = layer.register_forward_pre_hook(lambda _layer, args: seen.append(args[0].detach()))
            with torch.no_grad():
                for images, _ in batches[: config.calibration_nsamples]:
                    model(images)
            handle.remove()
            one_layer = LayerwiseCompressorConfig(global_config=layer_config, calibration_nsamples=len(seen))
            LayerwiseCompressor(torch.nn.Sequential(layer), one_layer).compress(seen, device="cpu", inplace=True)
            layer.weight.data[layer.weight.data.abs() < torch.finfo(torch.float16).eps] = 0  # as ct.convert stores it
        """
    )


# --------------------------------------------------------------------------- handler


def _layer_inputs(module: nn.Module, layer: nn.Module, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    """The inputs `layer` receives for the calibration batches in `module` as it is now (earlier layers pruned);
    every call counts (a graph evaluated in slices calls a layer once per slice)."""
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_pre_hook(lambda _layer, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            for inputs in batches:
                module(inputs)
    finally:
        handle.remove()
    return seen


def _flush_tiny_survivors(layer: nn.Module) -> int:
    weight = layer.weight.data
    tiny = (weight != 0) & (weight.abs() < CONVERTER_ZERO_BELOW)
    weight[tiny] = 0
    return int(tiny.sum())


def sparsegpt(module: nn.Module, spec: SparseGPTSpec, context: CompressionContext) -> CompressionResult:
    started = time.perf_counter()
    plans = plan_layers(module, spec, _check)
    eligible = [name for name, plan in plans.items() if plan.eligible]
    config_entry = library_config(spec, layers=layer_specs(plans))
    if eligible:
        config = load_config(config_entry)
        batches = [inputs for inputs, _ in context.calibration_batches(
            samples=spec.calibration_samples, seed=spec.seed, batch_size=CALIBRATION_BATCH)]
        module.eval()
        flushed = 0
        with context.library_logging():
            for index, name in enumerate(eligible):
                layer = module.get_submodule(name)
                seen = _layer_inputs(module, layer, batches)
                one_layer = LayerwiseCompressorConfig(global_config=config.get_module_config(name, layer),
                                                      calibration_nsamples=len(seen))
                LayerwiseCompressor(nn.Sequential(layer), one_layer).compress(seen, device="cpu", inplace=True)
                flushed += _flush_tiny_survivors(layer)
                context.progress.update((index + 1) / len(eligible),
                                        f"SparseGPT: {index + 1} of {len(eligible)} layers pruned ({name})")
        if flushed:
            context.note(f"{flushed:,} re-fitted weights smaller than fp16's epsilon ({CONVERTER_ZERO_BELOW:.2g}) were "
                         "set to zero, as Core ML's sparse conversion stores them.")
    else:
        context.note("No layer qualified for SparseGPT pruning; the model is unchanged.")
    facts = {
        name: LayerFacts(
            granularity="unstructured" if plans[name].spec.structure == "unstructured"
            else f"{plans[name].spec.n_m[0]}:{plans[name].spec.n_m[1]}",
            extra={"target_sparsity": plans[name].spec.effective_sparsity, "structure": plans[name].spec.structure,
                   "workflow": spec.workflow},
        )
        for name in eligible
    }
    result = library_result(module=module, spec=spec, plans=plans, facts=facts, context=context, method="sparsegpt",
                            started=started)
    result.library_config = config_entry
    return result


DESCRIPTOR = register_method(
    MethodDescriptor(
        name="sparsegpt",
        label="SparseGPT",
        color="#ff9da6",
        source="coremltools' LayerwiseCompressor with ModuleSparseGPTConfig (one-shot, calibration data)",
        spec_type=SparseGPTSpec,
        handler=sparsegpt,
        eligibility=eligibility,
        library_config=library_config,
        snippet=snippet,
        storage=STORAGE_SPARSE,
        latency_note=latency_notes.weight_only,
        seconds_per_mparam=100.0,  # the Hessian work grows with a layer's input width squared, not its weights
        search_refinable=True,
    )
)
