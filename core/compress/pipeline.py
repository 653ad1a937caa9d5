"""Joint pipelines: prune → palettize and prune → quantize_weights on the same model.

The second step sees the pruning masks (``context.masks``): palettization clusters only the surviving weights;
symmetric and asymmetric linear quantization map 0 exactly onto the grid. Afterwards the masks are enforced and
each layer's compression metadata lists both steps (``[pruning, palettization]`` / ``[pruning, quantization]``),
which ct.convert turns into sparse + palettized / sparse + quantized weights (iOS18 joint compression).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from coremltools.optimize.torch._utils.metadata_utils import CompressionMetadata
from torch import nn

from core.compress.context import CompressionContext
from core.compress.layers import LayerPlan, compression_types, locate, read_metadata, report_from_metadata
from core.compress.result import CompressionResult
from core.specs import PipelineSpec

Handler = Callable[[nn.Module, object, CompressionContext], CompressionResult]


def run_pipeline(
    module: nn.Module, spec: PipelineSpec, context: CompressionContext, handlers: dict[str, Handler]
) -> CompressionResult:
    started = time.perf_counter()
    first, second = spec.steps
    step1_context = dataclasses.replace(context, progress=context.progress.sub(0.0, 0.5))
    result1 = handlers[first.method](module, first, step1_context)
    pruned = {r.name for r in result1.layers if r.compressed}
    masks = {}
    for name in pruned:
        layer = locate(result1.module, name)
        masks[name] = (layer.weight.detach() != 0)
    step2_context = dataclasses.replace(
        context, progress=context.progress.sub(0.5, 1.0), masks=masks, inherited_kinds=frozenset({"pruning"})
    )
    result2 = handlers[second.method](result1.module, second, step2_context)
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
    )


def _joint_reason(step1, step2) -> str | None:
    if step1.compressed or step2.compressed:
        return None
    return step2.reason if step2.reason == step1.reason else f"{step1.reason}; {step2.reason}"
