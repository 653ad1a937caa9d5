"""Weight-bearing layers, per-layer plans (compress or why not) and the per-layer report read back from the result.

The report is measured, not predicted: after the library ran, each layer's compression metadata (the
``_COREML_/weight/*`` buffers that coremltools.optimize.torch registers and ``ct.convert`` reads) and its
weights are inspected. A layer the plan wanted compressed but the library skipped is reported with the
library's own log message as the reason.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from core.compress.result import CompressionResult, LayerReport
from core.library_internals import COMPRESSION_TYPES, BatchNormBase, metadata_buffers
from core.measure.quality import finite_or_none, snr_db
from core.models.bn_folding import conv_bn_pairs, folded_weight
from core.specs import CompressionSpec

# --------------------------------------------------------------------------- discovery


def weight_layers(module: nn.Module) -> dict[str, nn.Module]:
    """Every module that owns a weight matrix/kernel (Conv*, ConvTranspose*, Linear, Embedding, …), in order."""
    layers: dict[str, nn.Module] = {}
    for name, sub in module.named_modules():
        weight = dict(sub.named_parameters(recurse=False)).get("weight")
        if isinstance(weight, torch.Tensor) and weight.ndim >= 2:
            layers[name] = sub
    return layers


def weight_of(module: nn.Module) -> torch.Tensor:
    """The float weight of a float, reference-quantized or real int8 module (dequantized), detached on CPU."""
    weight = module.weight
    if callable(weight):  # torch.ao quantized modules expose weight() returning a quantized tensor
        weight = weight()
    if weight.is_quantized:
        weight = weight.dequantize()
    return weight.detach().float().cpu()


def locate(module: nn.Module, name: str) -> nn.Module | None:
    """Find the layer called `name` in a transformed copy (FX fusion nests it as `<name>.0`; coremltools wraps a
    conv or linear followed by an activation other than ReLU, e.g. ReLU6 or GELU, as `<name>.conv` / `<name>.linear`
    next to `<name>.act`)."""
    try:
        sub = module.get_submodule(name)
    except AttributeError:
        return None
    for _ in range(2):
        if _has_weight(sub):
            return sub
        children = dict(sub.named_children())
        child = children.get("0", children.get("conv", children.get("linear")))
        if child is None:
            return None
        sub = child
    return sub if _has_weight(sub) else None


def _has_weight(sub: nn.Module) -> bool:
    weight = getattr(sub, "weight", None)
    return isinstance(weight, torch.Tensor) or callable(weight)


# --------------------------------------------------------------------------- plans


@dataclass
class LayerPlan:
    """What the engine intends for one layer: its effective spec, or the reason it stays uncompressed."""

    name: str
    type: str
    shape: tuple[int, ...]
    params: int
    spec: CompressionSpec | None
    reason: str | None = None

    @property
    def eligible(self) -> bool:
        return self.spec is not None and self.reason is None


EligibilityCheck = Callable[[str, nn.Module, CompressionSpec], "str | None"]


def plan_layers(module: nn.Module, spec: CompressionSpec, check: EligibilityCheck) -> dict[str, LayerPlan]:
    """Resolve per-layer overrides and method-specific limits for every weight-bearing layer."""
    plans: dict[str, LayerPlan] = {}
    for name, layer in weight_layers(module).items():
        weight = layer.weight
        plan = LayerPlan(name, type(layer).__name__, tuple(weight.shape), weight.numel(), spec.resolve(name))
        if plan.spec is None:
            pattern = next((p for p in spec.overrides if re.search(p, name) and spec.overrides[p] is None), "?")
            plan.reason = f"overridden: left uncompressed by override '{pattern}'"
        else:
            plan.reason = check(name, layer, plan.spec)
        plans[name] = plan
    return plans


def threshold_reason(numel: int, threshold: int) -> str | None:
    """coremltools' convention: a weight is compressed only if it has more than weight_threshold elements."""
    if numel <= threshold:
        return f"below weight_threshold ({numel:,} ≤ {threshold:,} weights)"
    return None


def basic_ineligibility(layer: nn.Module, *, modules: tuple[type, ...], api: str, verb: str, threshold: int) -> str | None:
    """The reasons every coremltools handler shares: an op the library does not handle, or too few weights."""
    if not isinstance(layer, modules):
        return f"unsupported op: coremltools {api} does not {verb} {type(layer).__name__}"
    return threshold_reason(layer.weight.numel(), threshold)


# --------------------------------------------------------------------------- metadata and measurements


def read_metadata(layer: nn.Module, param: str = "weight") -> dict[str, torch.Tensor]:
    """The `_COREML_/<param>/<key>` buffers coremltools registered on this layer."""
    return metadata_buffers(layer, param)


def compression_types(meta: dict[str, torch.Tensor]) -> list[str]:
    kinds = meta.get("compression_type")
    return [] if kinds is None else [COMPRESSION_TYPES[int(v)] for v in kinds.flatten().tolist()]


def weight_snr_db(original: torch.Tensor, compressed: torch.Tensor) -> float | None:
    """Weight SNR for the report: core.measure.quality.snr_db, stored as None when infinite (identical weights)."""
    return finite_or_none(snr_db(reference=original, candidate=compressed))


def sparsity(weight: torch.Tensor) -> float:
    return float((weight == 0).float().mean().item())


@dataclass
class LayerFacts:
    """Measured facts about one compressed layer that are not in the metadata (extra detail for the report)."""

    method: str | None = None
    granularity: str | None = None
    bits: float | None = None
    extra: dict = field(default_factory=dict)


def report_from_metadata(
    *,
    original: nn.Module,
    compressed: nn.Module,
    plans: dict[str, LayerPlan],
    method: str,
    library_log: list[str] | None = None,
    facts: dict[str, LayerFacts] | None = None,
    inherited_kinds: frozenset[str] = frozenset(),
) -> tuple[list[LayerReport], dict[str, dict]]:
    """Per-layer reports and histogram tensors for a model compressed by coremltools.optimize.torch."""
    bn_pairs = conv_bn_pairs(original)
    reports: list[LayerReport] = []
    weights: dict[str, dict] = {}
    for name, plan in plans.items():
        before = original.get_submodule(name).weight.detach().float().cpu()
        layer = locate(compressed, name)
        after = weight_of(layer) if layer is not None else before
        reference, folded_bn = _reference_weight(original, compressed, name, bn_pairs, before, after)
        meta = read_metadata(layer) if layer is not None else {}
        kinds = compression_types(meta)
        own_kinds = [k for k in kinds if k not in inherited_kinds]
        report = LayerReport(
            name=name, type=plan.type, shape=plan.shape, params=plan.params, compressed=bool(own_kinds),
            sparsity=sparsity(after), snr_db=weight_snr_db(reference, after),
        )
        if folded_bn:
            report.extra["batchnorm_folded"] = folded_bn
        if own_kinds:
            _fill_from_metadata(report, meta, kinds, after)
            fact = (facts or {}).get(name)
            if fact is not None:
                report.method = fact.method or report.method
                report.granularity = fact.granularity or report.granularity
                report.bits = fact.bits if fact.bits is not None else report.bits
                report.extra.update(fact.extra)
            report.method = report.method or method
        elif plan.reason is not None:
            report.reason = plan.reason
        else:
            report.reason = _library_reason(name, library_log or []) or "skipped by the library (no compression metadata)"
        reports.append(report)
        weights[name] = _histogram_tensors(reference, after, meta, kinds)
    return reports, weights


def _reference_weight(original, compressed, name, bn_pairs, before, after) -> tuple[torch.Tensor, str | None]:
    """Compare against the BN-folded weight when the compressed copy folded the following BatchNorm into it."""
    bn_name = bn_pairs.get(name)
    if bn_name is None:
        return before, None
    try:
        still_there = isinstance(compressed.get_submodule(bn_name), BatchNormBase)
    except AttributeError:
        still_there = False
    if still_there:
        return before, None
    return folded_weight(original, name, bn_name), bn_name


def _fill_from_metadata(report: LayerReport, meta: dict, kinds: list[str], after: torch.Tensor) -> None:
    report.extra["compression_type"] = kinds
    if "palettization" in kinds:
        lut = meta["lut"]
        report.n_luts = int(math.prod(lut.shape[:-2])) if lut.ndim > 2 else 1
        report.lut_entries = int(lut.shape[-2])
        cluster_dim = int(lut.shape[-1]) if lut.ndim >= 2 else 1
        report.extra["cluster_dim"] = cluster_dim
        report.bits = math.log2(report.lut_entries)
        report.extra["index_bits_per_weight"] = report.bits / cluster_dim  # one index per cluster_dim weights
        report.granularity = "per_tensor" if report.n_luts == 1 else "per_grouped_channel"
        if report.n_luts > 1:
            report.extra["group_size"] = int(report.shape[0] // report.n_luts)
        if "quantization" in kinds:  # int8 LUT entries with a scale per LUT
            report.lut_bits = int(meta.get("quantization_n_bits", torch.tensor(8)).item())
            report.n_scales += int(meta["quantization_scale"].numel())
            if "zero_point" in meta:
                report.n_zero_points += int(meta["zero_point"].numel())
        if "palettization_scale" in meta:
            report.n_scales += int(meta["palettization_scale"].numel())
            report.extra["per_channel_scale"] = True
    elif "quantization" in kinds:
        scale = meta["quantization_scale"]
        report.bits = float(int(meta["quantization_n_bits"].item()))
        report.n_scales = int(scale.numel())
        if "zero_point" in meta:
            report.n_zero_points = int(meta["zero_point"].numel())
        if scale.numel() == 1:
            report.granularity = "per_tensor"
        elif scale.numel() == report.shape[0]:
            report.granularity = "per_channel"
        else:
            report.granularity = "per_block"
            report.extra["blocks_per_channel"] = int(scale.numel() // report.shape[0])
    elif kinds == ["pruning"]:
        report.bits = 16.0  # non-zeros stay fp16 next to a 1-bit mask
        report.granularity = "sparse"
    if "pruning" in kinds:
        report.extra["mask_bits"] = 1


def _library_reason(name: str, log: list[str]) -> str | None:
    hits = [line for line in log if f"{name}." in line or line.endswith(name) or f" {name} " in line]
    if not hits:
        return None
    return "skipped by coremltools: " + hits[-1].strip()[:240]


def _histogram_tensors(original: torch.Tensor, compressed: torch.Tensor, meta: dict, kinds: list[str]) -> dict:
    tensors: dict[str, torch.Tensor | float] = {"original": original.clone(), "compressed": compressed.clone()}
    if "palettization" in kinds:
        lut = meta["lut"].detach().float()
        tensors["lut"] = lut.reshape(-1, lut.shape[-2], lut.shape[-1])
    if "quantization" in kinds and "quantization_scale" in meta:
        tensors["scale"] = meta["quantization_scale"].detach().float().flatten()
        if "zero_point" in meta:
            tensors["zero_point"] = meta["zero_point"].detach().float().flatten()
    if "palettization_scale" in meta:
        tensors["per_channel_scale"] = meta["palettization_scale"].detach().float().flatten()
    if "pruning" in kinds:
        pruned = (compressed == 0) & (original != 0)
        tensors["threshold"] = float(original[pruned].abs().max().item()) if pruned.any() else 0.0
    return tensors


def library_result(
    *, module: nn.Module, spec, plans: dict[str, LayerPlan], facts: dict, context, method: str, started: float
) -> CompressionResult:
    """The CompressionResult of a coremltools.optimize.torch handler: per-layer report read back from the library."""
    layers, weights = report_from_metadata(
        original=context.original, compressed=module, plans=plans, method=method,
        library_log=context.library_log, facts=facts, inherited_kinds=context.inherited_kinds,
    )
    return CompressionResult(
        module=module.eval(), spec=spec, seconds=time.perf_counter() - started, layers=layers, weights=weights,
        calibration_source=context.calibration_source,
    )


# --------------------------------------------------------------------------- library subclasses of the plain layers


def as_plain_layers(module: nn.Module) -> list[str]:
    """Make library subclasses of nn.Linear / nn.Conv2d (timm's ``Linear``, a TorchScript-friendly nn.Linear) the
    plain layer they compute, in place (callers pass their working copy); the names of those changed.

    FX traces *into* a module that is not a torch.nn class, so its weight becomes a bare tensor quantized per tensor,
    outside every per-layer config, report and weights check. One whose forward gives exactly nn.Linear's /
    nn.Conv2d's output on a probe input is that layer."""
    swapped = []
    for name, layer in module.named_modules():
        base = nn.Linear if isinstance(layer, nn.Linear) else nn.Conv2d if isinstance(layer, nn.Conv2d) else None
        if base is None or type(layer).__module__.startswith("torch.") or type(layer).forward is base.forward:
            continue
        shape = (2, layer.in_features) if base is nn.Linear else (1, layer.in_channels, 8, 8)
        probe = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        try:
            with torch.no_grad():
                same = torch.equal(layer(probe), base.forward(layer, probe))
        except Exception:  # a forward that needs other inputs: not a plain layer
            same = False
        if same:
            layer.__class__ = base
            swapped.append(name)
    return swapped


def note_plain_layers(context, swapped: list[str]) -> None:
    if swapped:
        context.note(f"{len(swapped)} layer(s) of a library subclass of nn.Linear / nn.Conv2d quantized as the plain "
                     f"layer they compute (first: {swapped[0]})")
