"""What you measure is what you ship: the exported artifact's weights, decoded, against the evaluated module's.

Accuracy is measured on the compressed PyTorch module; the user downloads the artifact. This check reads the
artifact back (weights only: no conversion, no inference) and compares every weight layer:

* .mlpackage: the saved ML program is loaded (``core.library_internals.load_mil_program``), every ``constexpr_*``
  op (LUT, blockwise shift-scale, sparse, and their joint chains) is materialised with coremltools' own
  ``decompress`` routines, and each dense weight is paired with the torch layer whose parameter name it carries
  (``conv3.weight`` → ``conv3_weight_…``), else by shape and values. The evaluated weight is cast to fp16 (the
  program's precision). Values the program stores themselves (LUT entries, sparse non-zeros, dense fp16 weights)
  must be fp16-exact. Values it computes as integer × fp16 scale may differ by up to ``SCALED_ULPS`` fp16 units in
  the last place: the scale itself is rounded to fp16 (half a unit) and so is the product (another half).
  A const the converter made by folding a BatchNorm into a conv is compared against the fold computed in torch
  (same tolerance: the fold's arithmetic order differs) and named in the detail. So is one it made by folding a
  constant multiply that directly follows the layer in the model's graph (an ONNX HardSigmoid's ``x · alpha``, a
  ``x / 6``): only constants the graph applies to that layer's output are tried, so an arbitrary rescaling still fails.
* TorchScript int8 (torch_static / torch_dynamic): the saved program's packed int8 parameters are unpacked
  (``torch.ops.quantized.*_unpack``), dequantized and compared with the evaluated int8 module's, exactly; float
  weights it keeps (convolutions of a dynamic-int8 model) are compared exactly too.
"""

from __future__ import annotations

import inspect
import operator
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import fx, nn

from core.library_internals import PACKED_PARAMS_ATTRIBUTE, BatchNormBase, load_mil_program, packed_params_class

SCALED_ULPS = 4.0  # up to three fp16 roundings (LUT entry, scale, product), each ≤ 1 unit at the value, and the cast of the evaluated weight (½)
_SCALING_OPS = ("constexpr_blockwise_shift_scale", "constexpr_sparse_blockwise_shift_scale")
_UNPACK = {  # packed-parameter class → the op that unpacks it into (weight, bias)
    "LinearPackedParamsBase": ("linear_unpack", "linear_unpack_fp16"),
    "Conv1dPackedParamsBase": ("conv1d_unpack",),
    "Conv2dPackedParamsBase": ("conv2d_unpack",),
    "Conv3dPackedParamsBase": ("conv3d_unpack",),
}


class ArtifactReadError(ValueError):
    """The artifact could not be read back; the message says why."""


@dataclass(frozen=True)
class StoredWeight:
    """One dense weight decoded from an artifact."""

    value: np.ndarray
    scaled: bool = False  # computed as integer × scale (tolerance SCALED_ULPS) rather than stored as is


@dataclass(frozen=True)
class LayerComparison:
    """One evaluated weight layer and the artifact weight it was paired with."""

    layer: str
    artifact_name: str | None  # None: the artifact holds no weight for this layer
    paired_by: str  # "name", "shape and values", "BatchNorm <bn> folded in by the converter", "not found"
    max_abs_diff: float | None
    max_ulps: float | None  # in fp16 units in the last place (Core ML); None for TorchScript (compared exactly)
    ok: bool
    folded_batchnorm: str | None = None  # the BatchNorm the converter folded into this weight
    folded_constant: str | None = None  # the constant multiply the converter folded in ("scaled by 0.1667 (…)")


@dataclass(frozen=True)
class ArtifactWeightsCheck:
    """Every weight layer of the evaluated module against the artifact's decoded weights."""

    artifact_kind: str
    layers: tuple[LayerComparison, ...]
    tolerance: str
    seconds: float
    unpaired_artifact_weights: tuple[str, ...] = field(default=())  # decoded but no evaluated layer claimed them

    @property
    def match(self) -> bool:
        return bool(self.layers) and all(layer.ok for layer in self.layers)

    @property
    def mismatched(self) -> list[str]:
        return [layer.layer for layer in self.layers if not layer.ok]

    @property
    def folded(self) -> list[str]:
        return [f"{layer.layer} ({layer.folded_batchnorm})" for layer in self.layers if layer.folded_batchnorm]

    @property
    def scaled(self) -> list[str]:
        return [f"{layer.layer} ({layer.folded_constant})" for layer in self.layers if layer.folded_constant]

    @property
    def max_abs_diff(self) -> float | None:
        diffs = [layer.max_abs_diff for layer in self.layers if layer.max_abs_diff is not None]
        return max(diffs) if diffs else None

    @property
    def max_ulps(self) -> float | None:
        ulps = [layer.max_ulps for layer in self.layers if layer.max_ulps is not None and layer.ok]
        return max(ulps) if ulps else None

    def summary(self) -> str:
        """One sentence: how many layers, the largest difference, and which layers differ."""
        if not self.layers:
            return f"no weight layers to compare in the {self.artifact_kind}."
        worst = f"largest difference {self.max_abs_diff:.3g}" if self.max_abs_diff is not None else "no values compared"
        if self.max_ulps is not None:
            worst += f" ({self.max_ulps:g} fp16 units in the last place)"
        text = f"{len(self.layers)} weight layers of the {self.artifact_kind} compared with the evaluated model; {worst}"
        if self.folded:
            text += f"; the converter folded BatchNorm into {', '.join(self.folded)}, compared with the fold"
        if self.scaled:
            text += f"; the converter folded a constant multiply into {', '.join(self.scaled)}, compared with the product"
        if self.mismatched:
            names = ", ".join(self.mismatched[:8]) + (" …" if len(self.mismatched) > 8 else "")
            return f"{text}. MISMATCH in {len(self.mismatched)} layer(s): {names}."
        return f"{text}: all match ({self.tolerance})."

    def to_dict(self) -> dict:
        return {
            "match": self.match,
            "summary": self.summary(),
            "layers_compared": len(self.layers),
            "max_abs_diff": self.max_abs_diff,
            "max_ulps": self.max_ulps,
            "mismatched": self.mismatched,
            "folded_batchnorm": self.folded,
            "folded_constants": self.scaled,
            "tolerance": self.tolerance,
            "seconds": round(self.seconds, 4),
            "layers": [
                {"layer": c.layer, "artifact_name": c.artifact_name, "paired_by": c.paired_by,
                 "max_abs_diff": c.max_abs_diff, "max_ulps": c.max_ulps, "ok": c.ok,
                 "folded_batchnorm": c.folded_batchnorm, "folded_constant": c.folded_constant}
                for c in self.layers
            ],
        }


def check_artifact_weights(
    *, module: nn.Module, artifact_path: Path, artifact_kind: str, payload_module: nn.Module | None = None
) -> ArtifactWeightsCheck:
    """Decode `artifact_path`'s weights and compare them with the weights `module` was evaluated with.

    `payload_module` names the layers when `module` is a frozen TorchScript form (its weights are unnamed graph
    constants). Raises ArtifactReadError when the artifact cannot be read.
    """
    started = time.perf_counter()
    if artifact_kind == "mlpackage":
        stored = mlpackage_weights(Path(artifact_path))
        layers, unpaired = _pair(evaluated_float_weights(module), stored, batchnorms=_folds(module), fp16=True)
        tolerance = (f"fp16-exact for stored values; ≤ {SCALED_ULPS:g} fp16 units in the last place where the "
                     "artifact multiplies integers by an fp16 scale")
    elif artifact_kind == "torchscript":
        stored = torchscript_weights(_load_torchscript(Path(artifact_path)))
        layers, unpaired = _pair(evaluated_int8_weights(module, payload_module), stored, batchnorms=_Folds(), fp16=False)
        tolerance = "exact: the same int8 values and scales (and float weights) as the evaluated module"
    else:
        raise ArtifactReadError(f"cannot read weights back from a {artifact_kind!r} artifact (mlpackage or torchscript).")
    return ArtifactWeightsCheck(artifact_kind=artifact_kind, layers=tuple(layers), tolerance=tolerance,
                                seconds=time.perf_counter() - started, unpaired_artifact_weights=tuple(unpaired))


# --------------------------------------------------------------------------- Core ML: decode the ML program


def mlpackage_weights(path: Path) -> dict[str, StoredWeight]:
    """Every dense float weight (≥ 2-D) the program feeds to a compute op, by the name of the var that holds it."""
    try:
        program = load_mil_program(path)
    except Exception as exc:  # protobuf / file errors come in many types
        raise ArtifactReadError(f"{path.name} is not a readable ML program ({str(exc)[:200]}).") from exc
    weights: dict[str, StoredWeight] = {}
    for function in program.functions.values():
        for op in function.operations:
            if op.op_type != "const" and not op.op_type.startswith("constexpr_"):
                continue
            for var in op.outputs:
                if not any(not child.op_type.startswith("constexpr_") for child in var.child_ops):
                    continue  # a part of a compressed weight (indices, LUT, scale …), not the weight itself
                value, scaled = _materialise(var)
                if value is not None and value.ndim >= 2 and np.issubdtype(value.dtype, np.floating):
                    weights[var.name] = StoredWeight(value=value, scaled=scaled)
    return weights


def _materialise(var) -> tuple[np.ndarray | None, bool]:
    """A const's value, or a constexpr op's output decompressed by the op's own routine (inputs first, recursively).
    Returns (value, whether an integer × scale step was involved)."""
    op = var.op
    if op is None or op.op_type == "const":
        return (None if var.val is None else np.asarray(var.val)), False
    decompress = getattr(type(op), "decompress", None)
    if decompress is None:
        raise ArtifactReadError(f"no decompression routine for {op.op_type} (op {op.name}); cannot read its weight.")
    arguments, scaled = {}, op.op_type in _SCALING_OPS
    for name in inspect.signature(decompress).parameters:
        source = op.inputs.get(name)
        if source is None:
            arguments[name] = None
            continue
        arguments[name], inner_scaled = _materialise(source)
        scaled = scaled or inner_scaled
    value = decompress(**arguments)
    if isinstance(value, tuple):  # sparse ops return (mask, non-zero data)
        value = value[op.outputs.index(var)]
    return np.asarray(value), scaled


def evaluated_float_weights(module: nn.Module) -> dict[str, np.ndarray]:
    """The weight of every ≥ 2-D weight layer as the module computes with it: ``get_weight()`` for reference-quantized
    layers (quantize → dequantize, as their forward does), else ``.weight`` (decompressed LUT / pruned values)."""
    weights = {}
    for name, layer in module.named_modules():
        get_weight = getattr(layer, "get_weight", None)
        value = get_weight() if callable(get_weight) else getattr(layer, "weight", None)
        if isinstance(value, torch.Tensor) and value.dim() >= 2 and value.is_floating_point():
            weights[name] = value.detach().float().cpu().numpy()
    return weights


@dataclass(frozen=True)
class _Folds:
    """What a converter may fold into a layer's weight. Per BatchNorm layer, the per-channel factor it multiplies a
    preceding conv's weight by, and where every layer sits in the module (a fold is named after the first matching
    BatchNorm that follows the conv: with default statistics every BatchNorm of a width has the same factor). Per
    layer, the constants the graph multiplies that layer's output by, each with where it comes from."""

    factors: dict[str, np.ndarray] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)
    output_scales: dict[str, list[tuple[float, str]]] = field(default_factory=dict)

    def after(self, layer: str) -> list[str]:
        """BatchNorm names, those after `layer` first (nearest first), then the others."""
        here = self.positions.get(layer, -1)
        return sorted(self.factors, key=lambda bn: (self.positions[bn] < here, abs(self.positions[bn] - here)))


def _folds(module: nn.Module) -> _Folds:
    factors, positions = {}, {}
    for position, (name, layer) in enumerate(module.named_modules()):
        positions[name] = position
        if isinstance(layer, BatchNormBase) and layer.running_var is not None:
            gamma = layer.weight.detach() if layer.weight is not None else torch.ones_like(layer.running_var)
            factors[name] = (gamma / torch.sqrt(layer.running_var + layer.eps)).float().cpu().numpy()
    return _Folds(factors=factors, positions=positions, output_scales=_output_scales(module))


_MULTIPLY = {operator.mul, torch.mul, "mul"}
_DIVIDE = {operator.truediv, torch.div, torch.true_divide, "div"}


def _output_scales(module: nn.Module) -> dict[str, list[tuple[float, str]]]:
    """Per layer called in an FX graph (an ONNX or lifted model), the constants its output is multiplied by next:
    a float attribute of the module that takes the output (HardSigmoid's ``alpha``), or a ``* c`` / ``/ c``."""
    scales: dict[str, list[tuple[float, str]]] = {}
    for prefix, graph_module in module.named_modules():
        if not isinstance(graph_module, fx.GraphModule):
            continue
        for node in graph_module.graph.nodes:
            if node.op != "call_module":
                continue
            layer = f"{prefix}.{node.target}" if prefix else str(node.target)
            found = [scale for user in node.users for scale in _constants_applied_by(user, graph_module)]
            if found:
                scales[layer] = found
    return scales


def _constants_applied_by(node: fx.Node, graph_module: fx.GraphModule) -> list[tuple[float, str]]:
    numbers = [a for a in node.args if isinstance(a, float | int) and not isinstance(a, bool) and a not in (0, 1)]
    if node.op == "call_module":
        owner = graph_module.get_submodule(str(node.target))
        return [(float(value), f"{attribute} of {type(owner).__name__} {node.target}")
                for attribute, value in vars(owner).items()
                if isinstance(value, float) and value not in (0.0, 1.0) and not attribute.startswith("_")]
    if node.target in _MULTIPLY:
        return [(float(n), f"the multiply by {n:g} in {node.name}") for n in numbers]
    if node.target in _DIVIDE and len(node.args) == 2 and node.args[1] in numbers:
        return [(1.0 / float(node.args[1]), f"the division by {node.args[1]:g} in {node.name}")]
    return []


# --------------------------------------------------------------------------- TorchScript: unpack int8 parameters


def _load_torchscript(path: Path) -> torch.jit.ScriptModule:
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # a damaged archive raises RuntimeError, ValueError …
        raise ArtifactReadError(f"{path.name} is not a loadable TorchScript file ({str(exc).splitlines()[0][:200]}).") from exc


def _unpack(packed) -> torch.Tensor:
    """The weight of a packed int8 parameter object, dequantized (fp16 dynamic-quantized weights as float)."""
    class_name = packed_params_class(packed)
    for op_name in _UNPACK.get(class_name, ()):
        try:
            weight = getattr(torch.ops.quantized, op_name)(packed)[0]
        except RuntimeError:
            continue  # linear_unpack refuses fp16-packed weights; linear_unpack_fp16 takes them
        return weight.dequantize() if weight.is_quantized else weight.float()
    raise ArtifactReadError(f"cannot unpack a {class_name} (no torch.ops.quantized routine for it).")


def torchscript_weights(program: nn.Module) -> dict[str, StoredWeight]:
    """Int8 weights of a (traced or frozen) TorchScript module: packed attributes by module name, packed graph
    constants (frozen: unnamed, numbered) and float ≥ 2-D weights by parameter's module name."""
    weights: dict[str, StoredWeight] = {}
    for name, sub in program.named_modules():
        packed = getattr(sub, PACKED_PARAMS_ATTRIBUTE, None)
        if isinstance(packed, torch.ScriptObject):  # a Linear's sits one level down, in a LinearPackedParams module
            owner = name.removesuffix(f".{PACKED_PARAMS_ATTRIBUTE}")
            weights[owner] = StoredWeight(_unpack(packed).numpy())
    for name, param in program.named_parameters():
        if name.endswith(".weight") and param.dim() >= 2 and param.is_floating_point():
            weights[name.removesuffix(".weight")] = StoredWeight(param.detach().float().numpy())
    graph = getattr(program, "graph", None)
    if graph is not None:
        for index, node in enumerate(n for n in graph.nodes() if n.kind() == "prim::Constant"):
            if "PackedParams" in str(node.output().type()):
                user = next((use.user.kind() for use in node.output().uses()), "unused")
                weights[f"constant {index} ({user})"] = StoredWeight(_unpack(node.output().toIValue()).numpy())
    return weights


def evaluated_int8_weights(module: nn.Module, payload_module: nn.Module | None) -> dict[str, np.ndarray]:
    """The evaluated int8 module's dequantized weights (and float ≥ 2-D weights), by layer name.

    A frozen TorchScript form holds its weights as unnamed constants: they are read from it (they are what ran) and
    named after the layer of `payload_module` (the GraphModule it was frozen from) with identical values."""
    if isinstance(module, torch.jit.ScriptModule):
        found = {name: stored.value for name, stored in torchscript_weights(module).items()}
        named = _int8_module_weights(payload_module) if payload_module is not None else {}
        return {_same_values_name(name, value, named): value for name, value in found.items()}
    return _int8_module_weights(module)


def _int8_module_weights(module: nn.Module) -> dict[str, np.ndarray]:
    weights = {}
    for name, layer in module.named_modules():
        weight = getattr(layer, "weight", None)
        if callable(weight) and not isinstance(weight, torch.Tensor):  # torch.ao quantized layers: weight()
            value = weight()
            weights[name] = (value.dequantize() if value.is_quantized else value.float()).numpy()
        elif isinstance(weight, torch.Tensor) and weight.dim() >= 2 and weight.is_floating_point():
            weights[name] = weight.detach().float().numpy()
    return weights


def _same_values_name(name: str, value: np.ndarray, named: dict[str, np.ndarray]) -> str:
    for candidate, other in named.items():
        if other.shape == value.shape and np.array_equal(other, value):
            return candidate
    return name


# --------------------------------------------------------------------------- pairing and comparing


def pair_weights(evaluated: dict[str, np.ndarray], stored: dict[str, StoredWeight], *, fp16: bool = True
                 ) -> tuple[list[LayerComparison], list[str]]:
    """Evaluated weights by layer paired with decoded artifact weights by name (no BatchNorm folds to consider);
    the comparisons, and the artifact weights left unpaired."""
    return _pair(evaluated, stored, batchnorms=_Folds(), fp16=fp16)


def _pair(
    evaluated: dict[str, np.ndarray], stored: dict[str, StoredWeight], *, batchnorms: _Folds, fp16: bool
) -> tuple[list[LayerComparison], list[str]]:
    """Each evaluated layer with the artifact weight named after it, else the same-shaped one closest in value
    (directly, or after a BatchNorm fold); a layer with no same-shaped weight left is 'not found'."""
    claimed: set[str] = set()
    comparisons: dict[str, LayerComparison] = {}
    for layer, expected in evaluated.items():  # by name first, so a shape match cannot steal a named weight
        artifact_name = _named(layer, stored, claimed)
        if artifact_name is not None:
            claimed.add(artifact_name)
            comparisons[layer] = _best(layer, expected, {artifact_name: stored[artifact_name]}, batchnorms, fp16, "name")
    for matching_only in (True, False):  # exact matches claim first, so a closest miss cannot take another's weight
        for layer, expected in evaluated.items():
            if layer in comparisons:
                continue
            candidates = {n: w for n, w in stored.items() if n not in claimed and w.value.shape == expected.shape}
            if not candidates:
                if not matching_only:
                    comparisons[layer] = _shared_weight(layer, expected, evaluated, comparisons)
                continue
            best = _best(layer, expected, candidates, batchnorms, fp16, "shape and values")
            if best.ok or not matching_only:
                comparisons[layer] = best
                claimed.add(best.artifact_name)
    ordered = [comparisons[layer] for layer in evaluated]
    return ordered, sorted(set(stored) - claimed)


def _shared_weight(layer: str, expected: np.ndarray, evaluated: dict[str, np.ndarray],
                   comparisons: dict[str, LayerComparison]) -> LayerComparison:
    """A layer whose weight is another compared layer's (tied weights are stored once), else 'not found'."""
    for other, comparison in comparisons.items():
        if comparison.artifact_name is not None and np.array_equal(evaluated[other], expected):
            return replace(comparison, layer=layer, paired_by=f"the weight it shares with {other}",
                           folded_batchnorm=None)
    return LayerComparison(layer, None, "not found", None, None, False)


def _named(layer: str, stored: dict[str, StoredWeight], claimed: set[str]) -> str | None:
    """The artifact weight carrying the layer's name: TorchScript keeps it; the converter writes ``a.b.weight`` as
    ``a_b_weight_<suffix>`` (``_to_fp16``, ``_cast_fp16`` …)."""
    if layer in stored and layer not in claimed:
        return layer
    prefix = layer.replace(".", "_").replace("/", "_") + "_weight"  # ONNX node paths (s4/b4/conv1/conv/Conv) too
    for name in stored:
        if name not in claimed and (name == prefix or name.startswith(prefix + "_")):
            return name
    return None


def _best(
    layer: str, expected: np.ndarray, candidates: dict[str, StoredWeight], batchnorms: _Folds,
    fp16: bool, paired_by: str,
) -> LayerComparison:
    """The candidate that matches (as is, else as a BatchNorm fold); if none does, the closest one, as a mismatch."""
    tried: list[LayerComparison] = []
    for name, weight in candidates.items():
        tried.append(_compare(layer, name, expected, weight, fp16=fp16, paired_by=paired_by))
        if tried[-1].ok:
            return tried[-1]
    if fp16:
        for name, weight in candidates.items():
            bn_name = _folded_batchnorm(layer, expected, weight.value, batchnorms)
            if bn_name is None:
                continue
            folded = expected * batchnorms.factors[bn_name].reshape((-1,) + (1,) * (expected.ndim - 1))
            fold = StoredWeight(weight.value, scaled=True)  # fold arithmetic order differs: the scaled tolerance
            result = _compare(layer, name, folded, fold, fp16=True,
                              paired_by=f"BatchNorm {bn_name} folded in by the converter")
            if result.ok:
                return replace(result, folded_batchnorm=bn_name)
        for name, weight in candidates.items():
            for scale, source in batchnorms.output_scales.get(layer, []):
                result = _compare(layer, name, expected * scale, StoredWeight(weight.value, scaled=True), fp16=True,
                                  paired_by=f"constant multiply folded in by the converter ({source})")
                if result.ok:
                    return replace(result, folded_constant=f"scaled by {scale:.4g}: {source}")
    return min(tried, key=lambda c: c.max_abs_diff if c.max_abs_diff is not None else np.inf)


def _folded_batchnorm(layer: str, expected: np.ndarray, stored: np.ndarray, batchnorms: _Folds) -> str | None:
    """The BatchNorm whose per-channel factor turns `expected` into `stored`, if one does: each output channel's
    least-squares ratio is compared with every BatchNorm's factor (a vector per layer, so this stays cheap)."""
    flat_expected = expected.reshape(expected.shape[0], -1).astype(np.float64)
    flat_stored = stored.reshape(stored.shape[0], -1).astype(np.float64)
    energy = (flat_expected * flat_expected).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (flat_expected * flat_stored).sum(axis=1) / energy
    live = energy > 0  # an all-zero channel (pruned) says nothing about its factor
    for name in batchnorms.after(layer):
        factor = batchnorms.factors[name]
        if factor.shape[0] == expected.shape[0] and np.allclose(ratio[live], factor[live], rtol=1e-2, atol=1e-6):
            return name
    return None


def _compare(layer: str, name: str, expected: np.ndarray, stored: StoredWeight, *, fp16: bool, paired_by: str
             ) -> LayerComparison:
    got = stored.value
    if got.shape != expected.shape:
        return LayerComparison(layer, name, f"{paired_by}; shapes differ {list(got.shape)} vs {list(expected.shape)}",
                               None, None, False)
    if not fp16:
        diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
        worst = float(diff.max()) if diff.size else 0.0
        return LayerComparison(layer, name, paired_by, worst, None, worst == 0.0)
    with np.errstate(over="ignore", invalid="ignore"):  # a damaged weight may decode to inf / nan: a mismatch
        want = expected.astype(np.float16)
        diff = np.abs(got.astype(np.float32) - want.astype(np.float32))
        # fp16 spacing at the larger magnitude of the pair: a unit in the last place where the value lives
        unit = np.spacing(np.maximum(np.abs(want), np.abs(got.astype(np.float16)))).astype(np.float32)
        ulps = float((diff / unit).max()) if diff.size else 0.0
    worst = float(diff.max()) if diff.size else 0.0
    limit = SCALED_ULPS if stored.scaled else 0.0
    return LayerComparison(layer, name, paired_by, worst, round(ulps, 3), bool(np.isfinite(ulps) and ulps <= limit))
