"""Joint pipelines: prune → palettize and prune → quantize_weights on the same model.

The second step sees the pruning masks (``context.masks``): palettization clusters only the surviving weights;
symmetric and asymmetric linear quantization map 0 exactly onto the grid. Afterwards the masks are enforced and
each layer's compression metadata lists both steps (``[pruning, palettization]`` / ``[pruning, quantization]``),
which ct.convert turns into sparse + palettized / sparse + quantized weights (iOS18 joint compression).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from torch import nn

from core.compress.context import CompressionContext
from core.compress.layers import LayerPlan, compression_types, locate, read_metadata, report_from_metadata
from core.compress.registry import PIPELINE, method_color, method_descriptor, method_label, register_combination
from core.compress.result import CompressionResult
from core.library_internals import CompressionMetadata
from core.specs import PipelineSpec


def run_pipeline(module: nn.Module, spec: PipelineSpec, context: CompressionContext) -> CompressionResult:
    started = time.perf_counter()
    first, second = spec.steps
    step1_context = dataclasses.replace(context, progress=context.progress.sub(0.0, 0.5))
    result1 = method_descriptor(first.method).handler(module, first, step1_context)
    pruned = {r.name for r in result1.layers if r.compressed}
    masks = {}
    for name in pruned:
        layer = locate(result1.module, name)
        masks[name] = (layer.weight.detach() != 0)
    step2_context = dataclasses.replace(
        context, progress=context.progress.sub(0.5, 1.0), masks=masks, inherited_kinds=frozenset({"pruning"})
    )
    result2 = method_descriptor(second.method).handler(result1.module, second, step2_context)
    context.calibration_source = step1_context.calibration_source or step2_context.calibration_source

    restored = 0
    for name, mask in masks.items():
        layer = locate(result2.module, name)
        weight = layer.weight
        if (weight.detach()[~mask] != 0).any():
            weight.data *= mask.to(weight.dtype)
            restored += 1
        kinds = compression_types(read_metadata(layer))
        joint = ["pruning"] + [k for k in kinds if k != "pruning"]
        CompressionMetadata("weight", compression_type=joint).register(layer, override_compression_type=True)
    if restored:
        context.note(
            f"{second.method} moved pruned weights of {restored} layer(s) off zero; the pruning mask was re-applied "
            "(zeros are stored by the sparse mask, the surviving weights stay on the LUT / grid)."
        )

    by_name1 = {r.name: r for r in result1.layers}
    by_name2 = {r.name: r for r in result2.layers}
    plans = {
        r.name: LayerPlan(r.name, r.type, r.shape, r.params, spec=None, reason=_joint_reason(by_name1[r.name], r))
        for r in result2.layers
    }
    layers, weights = report_from_metadata(
        original=context.original, compressed=result2.module, plans=plans, method=spec.summary(),
        library_log=context.library_log,
    )
    for report in layers:
        step1, step2 = by_name1[report.name], by_name2[report.name]
        done = [s.method for s, r in ((first, step1), (second, step2)) if r.compressed]
        report.method = "+".join(done) if done else None
        report.extra.update({k: v for k, v in step1.extra.items() if k not in report.extra})
        report.extra.update({k: v for k, v in step2.extra.items() if k not in report.extra})
        if step2.compressed:
            report.granularity = step2.granularity
        elif step1.compressed:
            report.granularity = step1.granularity
            report.extra[f"{second.method}_skipped"] = step2.reason
        if step2.compressed and not step1.compressed:
            report.extra[f"{first.method}_skipped"] = step1.reason
    return CompressionResult(
        module=result2.module.eval(), spec=spec, seconds=time.perf_counter() - started, layers=layers,
        weights=weights, calibration_source=context.calibration_source,
        library_config=[result1.library_config, result2.library_config],
    )


def _joint_reason(step1, step2) -> str | None:
    if step1.compressed or step2.compressed:
        return None
    return step2.reason if step2.reason == step1.reason else f"{step1.reason}; {step2.reason}"


# --------------------------------------------------------------------------- the pipeline's descriptor


def library_config(spec: PipelineSpec, *, layers: Any = None, fine_tune_steps: int | None = None) -> dict:
    """One config entry per step, each from its own method's library_config."""
    return {"pipeline": [method_descriptor(step.method).library_config(step) for step in spec.steps]}


def latency_note(*, spec: PipelineSpec, result: Any, timed_artifact: bool) -> str:
    """Both supported pipelines are weight-only (prune → palettize / quantize_weights): the last step's note holds
    for the joint result; a step that rewrote the graph is named by its own note."""
    notes = [method_descriptor(step.method).latency_note(spec=step, result=result, timed_artifact=timed_artifact)
             for step in spec.steps]
    return notes[-1] if len(set(notes)) == 1 else " ".join(dict.fromkeys(notes))


@dataclasses.dataclass(frozen=True)
class PipelineDescriptor:
    """What `method_descriptor("pipeline")` answers: display, handler, config and notes of a joint pipeline."""

    name: str = PIPELINE
    label: str = method_label(PIPELINE)
    color: str = method_color(PIPELINE)
    source: str = "coremltools' joint compression (sparse + palettized / sparse + quantized weights, iOS18)"
    spec_type: type = PipelineSpec
    runs_int8_kernels: bool = False
    artifact_kind: str = "mlpackage"
    seconds_per_mparam: float = 0.0  # estimate a pipeline step by step (each step's own descriptor)

    @staticmethod
    def handler(module: nn.Module, spec: PipelineSpec, context: CompressionContext) -> CompressionResult:
        return run_pipeline(module, spec, context)

    @staticmethod
    def library_config(spec: PipelineSpec, **kwargs: Any) -> dict:
        return library_config(spec, **kwargs)

    @staticmethod
    def latency_note(*, spec: PipelineSpec, result: Any, timed_artifact: bool) -> str:
        return latency_note(spec=spec, result=result, timed_artifact=timed_artifact)

    @staticmethod
    def compressed_by_default(
        params: int, spec: PipelineSpec | None = None, *, layer: Any = None, name: str = ""
    ) -> tuple[bool, str | None]:
        """A layer is compressed when either step compresses it; otherwise the steps' reasons."""
        if spec is None:
            raise ValueError("a pipeline has no default spec; pass the PipelineSpec.")
        answers = [method_descriptor(step.method).compressed_by_default(params, step, layer=layer, name=name)
                   for step in spec.steps]
        if any(yes for yes, _ in answers):
            return True, None
        reasons = list(dict.fromkeys(reason for _, reason in answers if reason))
        return False, "; ".join(reasons) or None


PIPELINE_DESCRIPTOR = register_combination(PipelineDescriptor())
