"""Model size: the real artifact on disk, the theoretical size from the per-layer report, and the check between them.

How each method's weights are stored (the theoretical model), per weight-bearing layer of `params` weights:

* not compressed             → params × 16 bits (Core ML keeps weights as fp16)
* palettize                  → params / cluster_dim indices × n_bits + LUTs (n_luts × entries × cluster_dim ×
                               lut_bits) + per-channel scales (fp16)
* quantize_weights / W8A8    → params × bits + scales (fp16) + zero-points (8 bits)
* prune                      → 1-bit mask over all params + the non-zero values (fp16, or as indices/ints when
                               the pipeline palettizes / quantizes them)
* everything that is not a layer weight (biases, BatchNorm) → fp16.

Results that run on PyTorch int8 kernels (torch_static / torch_dynamic) are TorchScript files; their
theoretical size is the payload of the module's own tensors (int8 weights, fp32 biases, fp64 per-channel scales
and int64 zero-points, as PyTorch stores them).
"""

from __future__ import annotations

import dataclasses
import math
import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from core.layer_report import LayerReport
from core.library_internals import PACKED_PARAMS_SUFFIXES, is_torchscript_tensor_entry, mlpackage_weight_files

SIZE_TOLERANCE = 0.05

# How a method stores a compressed weight (each method's descriptor in core.compress.registry declares one):
STORAGE_LUT = "lut"  # an index per weight (or per cluster_dim weights) into look-up tables
STORAGE_LINEAR = "linear"  # the weight itself at `bits` bits plus scales / zero-points
STORAGE_SPARSE = "sparse"  # a 1-bit mask over every position plus the surviving values
STORAGE_KINDS = (STORAGE_LUT, STORAGE_LINEAR, STORAGE_SPARSE)
# method name → its storage kind, filled by core.compress.registry.register_method (this package is below the
# compression engine and never imports it)
_METHOD_STORAGE: dict[str, str] = {}
BREAKDOWN_KEYS = ("indices", "luts", "quantized_weights", "sparse_values", "masks", "scales", "zero_points", "uncompressed")


@dataclass(frozen=True)
class StorageFormat:
    """Element sizes of one artifact format, in bits."""

    name: str
    float_bits: int
    scale_bits: int
    zero_point_bits: int


COREML_FORMAT = StorageFormat("mlpackage", float_bits=16, scale_bits=16, zero_point_bits=8)
TORCHSCRIPT_FORMAT = StorageFormat("torchscript", float_bits=32, scale_bits=64, zero_point_bits=64)


@dataclass
class SizeEstimate:
    """Theoretical bytes with their breakdown (bytes per kind), plus what bits/weight needs."""

    breakdown: dict[str, float] = field(default_factory=lambda: dict.fromkeys(BREAKDOWN_KEYS, 0.0))
    weight_params: int = 0  # weights of the weight-bearing layers
    weight_bits: float = 0.0  # every bit spent on those weights (indices, LUTs, scales, masks, …)
    nominal_bits: float = 0.0  # Σ params × the layer's nominal bit width (for the "bits" column)
    per_layer_bytes: dict[str, float] = field(default_factory=dict)
    storage_format: str = COREML_FORMAT.name

    @property
    def total_bytes(self) -> int:
        return math.ceil(sum(self.breakdown.values()))

    @property
    def bits_per_weight(self) -> float | None:
        """Effective bits per weight: everything stored for the layer weights ÷ their count (LUTs etc. included)."""
        return self.weight_bits / self.weight_params if self.weight_params else None

    @property
    def nominal_bits_per_weight(self) -> float | None:
        return self.nominal_bits / self.weight_params if self.weight_params else None

    def rounded_breakdown(self) -> dict[str, int]:
        return {k: math.ceil(v) for k, v in self.breakdown.items()}


# --------------------------------------------------------------------------- bytes on disk


def path_size_bytes(path: Path | str) -> int:
    """Bytes on disk of a file, or of every file under a directory (an .mlpackage is a directory).

    Raises FileNotFoundError naming the path when it does not exist.
    """
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        raise FileNotFoundError(f"artifact not found: {path}")
    total = 0
    for root, _dirs, files in os.walk(path):
        total += sum((Path(root) / f).stat().st_size for f in files)
    return total


def float_param_count(module: nn.Module) -> int:
    """Floating-point elements in the state_dict (parameters and float buffers such as BatchNorm statistics)."""
    return sum(t.numel() for t in module.state_dict().values() if isinstance(t, torch.Tensor) and t.is_floating_point())


# --------------------------------------------------------------------------- theoretical size


def register_storage(*, method: str, storage: str) -> None:
    """Declare how `method` stores a compressed weight (called when the method registers)."""
    if storage not in STORAGE_KINDS:
        raise ValueError(f"{method}: storage must be one of {', '.join(STORAGE_KINDS)}; got {storage!r}.")
    _METHOD_STORAGE[method] = storage


def storage_kinds(method: str | None) -> set[str] | None:
    """The storage kinds of a per-layer method string ("prune+palettize" → {sparse, lut}); None when a part of it is
    not a registered method (no compression method was imported in this process, or an unknown name)."""
    parts = [part for part in str(method or "").split("+") if part]
    if any(part not in _METHOD_STORAGE for part in parts):
        return None
    return {_METHOD_STORAGE[part] for part in parts}


def layer_storage_bits(layer: LayerReport, fmt: StorageFormat = COREML_FORMAT) -> dict[str, float]:
    """Bits of one layer's weight storage by kind, following the storage rules in the module docstring.

    Which rule applies comes from the storage kind each method's descriptor declares (a "prune+palettize" layer
    combines the sparse and the LUT rules), not from method names.
    """
    bits = dict.fromkeys(BREAKDOWN_KEYS, 0.0)
    params = int(layer.params)
    storage = storage_kinds(layer.method) or set()
    sparse = STORAGE_SPARSE in storage
    if not layer.compressed or (layer.bits is None and not sparse):
        bits["uncompressed"] = params * fmt.float_bits
        return bits
    stored = params
    if sparse:
        bits["masks"] = float(params)  # one bit per weight position
        stored = params - round(params * float(layer.sparsity))
    value_bits = float(layer.bits) if layer.bits is not None else float(fmt.float_bits)
    if STORAGE_LUT in storage:
        cluster_dim = max(int(layer.extra.get("cluster_dim", 1) or 1), 1)
        bits["indices"] = math.ceil(stored / cluster_dim) * value_bits
        bits["luts"] = layer.n_luts * layer.lut_entries * cluster_dim * layer.lut_bits
    elif STORAGE_LINEAR in storage:
        bits["quantized_weights"] = stored * value_bits
    elif sparse:
        bits["sparse_values"] = stored * float(fmt.float_bits)
    else:  # a method without a registered storage kind: count its weights as stored densely at that bit width
        bits["quantized_weights"] = stored * value_bits
    bits["scales"] = layer.n_scales * fmt.scale_bits
    bits["zero_points"] = layer.n_zero_points * fmt.zero_point_bits
    return bits


_LAYER_FIELDS = {f.name for f in dataclasses.fields(LayerReport)}


def layer_bits_per_weight(layer: dict) -> float | None:
    """Stored bits per weight of one layer as recorded (a LayerReport dict), LUTs, scales and masks included.

    The one storage-bits model for a stored record: the value the experiment wrote (``extra["bits_per_weight"]``)
    when present, otherwise ``layer_storage_bits`` in the Core ML format. 16 for an uncompressed (fp16) layer;
    None when the layer has no weights, or is marked compressed without a bit width the model can use.
    """
    params = int(layer.get("params") or 0)
    if not params:
        return None
    if not layer.get("compressed"):
        return float(COREML_FORMAT.float_bits)
    recorded = (layer.get("extra") or {}).get("bits_per_weight")
    if isinstance(recorded, int | float) and not isinstance(recorded, bool):
        return float(recorded)
    data = {key: value for key, value in layer.items() if key in _LAYER_FIELDS and value is not None}
    data.setdefault("name", "")
    data.setdefault("type", "")
    report = LayerReport.from_dict(data)
    storage = storage_kinds(report.method)
    if storage is None:  # no compression method is loaded here, so how it stores weights is unknown: say n/a
        return None
    if report.bits is None and STORAGE_SPARSE not in storage:
        return None
    return sum(layer_storage_bits(report).values()) / params


def theoretical_size(
    *, layers: Iterable[LayerReport], total_float_params: int, fmt: StorageFormat = COREML_FORMAT
) -> SizeEstimate:
    """Theoretical artifact bytes from the per-layer report plus every non-weight float (biases, BatchNorm).

    `total_float_params` counts all float tensor elements of the *original* model; the layer weights are
    subtracted from it, the rest is stored uncompressed.
    """
    estimate = SizeEstimate(storage_format=fmt.name)
    layer_weights = 0
    for layer in layers:
        parts = layer_storage_bits(layer, fmt)
        for key, value in parts.items():
            estimate.breakdown[key] += value / 8.0
        layer_bits = sum(parts.values())
        estimate.per_layer_bytes[layer.name] = layer_bits / 8.0
        estimate.weight_params += int(layer.params)
        estimate.weight_bits += layer_bits
        nominal = layer.bits if (layer.compressed and layer.bits is not None) else fmt.float_bits
        estimate.nominal_bits += int(layer.params) * float(nominal)
        layer_weights += int(layer.params)
    other = max(int(total_float_params) - layer_weights, 0)
    estimate.breakdown["uncompressed"] += other * fmt.float_bits / 8.0
    return estimate


def module_payload_size(module: nn.Module) -> SizeEstimate:
    """Theoretical size of a PyTorch (int8-kernel) module: the bytes of the tensors it stores.

    Quantized tensors count 1 byte per int8 element plus their scales (fp64) and zero-points (int64) as PyTorch
    stores them; packed parameters (quantized Linear) are unpacked from the state_dict.
    """
    estimate = SizeEstimate(storage_format=TORCHSCRIPT_FORMAT.name)
    for name, value in module.state_dict().items():
        for tensor in _tensors_in(value):
            _add_tensor(estimate, name, tensor)
    return estimate


def _tensors_in(value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, tuple | list):
        return [t for item in value for t in _tensors_in(item)]
    return []


def _add_tensor(estimate: SizeEstimate, name: str, tensor: torch.Tensor) -> None:
    if tensor.is_quantized:
        n = tensor.numel()
        estimate.breakdown["quantized_weights"] += n * tensor.element_size()
        if tensor.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            channels = tensor.q_per_channel_scales().numel()
            estimate.breakdown["scales"] += channels * 8
            estimate.breakdown["zero_points"] += channels * 8
            extra_bits = channels * 128
        else:
            estimate.breakdown["scales"] += 8
            estimate.breakdown["zero_points"] += 8
            extra_bits = 128
        layer = _layer_name(name)
        estimate.per_layer_bytes[layer] = estimate.per_layer_bytes.get(layer, 0.0) + n * tensor.element_size() + extra_bits / 8
        estimate.weight_params += n
        estimate.weight_bits += n * tensor.element_size() * 8 + extra_bits
        estimate.nominal_bits += n * tensor.element_size() * 8
    elif tensor.is_floating_point():
        key = "scales" if tensor.numel() == 1 and ("scale" in name) else "uncompressed"
        estimate.breakdown[key] += tensor.numel() * tensor.element_size()
        if name.endswith("weight") and tensor.dim() >= 2:  # a float layer weight left as is (e.g. Conv under torch_dynamic)
            estimate.weight_params += tensor.numel()
            estimate.weight_bits += tensor.numel() * tensor.element_size() * 8
            estimate.nominal_bits += tensor.numel() * tensor.element_size() * 8
    elif "zero_point" in name:
        estimate.breakdown["zero_points"] += tensor.numel() * tensor.element_size()
    # integer bookkeeping buffers (e.g. num_batches_tracked) are not part of the model's payload


def _layer_name(state_key: str) -> str:
    for suffix in (*PACKED_PARAMS_SUFFIXES, ".weight"):
        if state_key.endswith(suffix):
            return state_key[: -len(suffix)]
    return state_key


# --------------------------------------------------------------------------- the check


def container_overhead_bytes(path: Path | str) -> int | None:
    """Bytes of an artifact that are not weight data: an .mlpackage's program + manifest, a TorchScript zip's code."""
    path = Path(path)
    if path.is_dir():
        return path_size_bytes(path) - sum(p.stat().st_size for p in mlpackage_weight_files(path))
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            data = sum(i.compress_size for i in zf.infolist() if is_torchscript_tensor_entry(i.filename))
        return path.stat().st_size - data
    return None


def size_check(
    *, artifact_bytes: int, theoretical_bytes: int, artifact_path: Path | str | None = None, tolerance: float = SIZE_TOLERANCE
) -> dict:
    """artifact ÷ theoretical within ±tolerance; otherwise a note explains the gap (overhead or unaccounted bytes)."""
    if theoretical_bytes <= 0:
        return {"ratio": None, "ok": False, "note": "no theoretical size (the per-layer report is empty)."}
    ratio = artifact_bytes / theoretical_bytes
    ok = abs(ratio - 1.0) <= tolerance
    if ok:
        return {"ratio": ratio, "ok": True, "note": f"artifact is {ratio:.3f}× the theoretical size (within ±{tolerance:.0%})."}
    overhead = container_overhead_bytes(artifact_path) if artifact_path is not None else None
    gap = artifact_bytes - theoretical_bytes
    if overhead is not None and gap > 0 and abs((artifact_bytes - overhead) / theoretical_bytes - 1.0) <= tolerance:
        note = (
            f"artifact is {ratio:.3f}× the theoretical size: {overhead / 1024:.1f} KiB of it is the container's fixed "
            f"overhead (program description, manifest, blob headers), large next to {theoretical_bytes / 1024:.1f} KiB "
            "of weights; without it the artifact matches within ±5 %."
        )
    elif gap > 0:
        note = (
            f"artifact is {ratio:.3f}× the theoretical size: {gap / 1024:.1f} KiB more than the per-layer report "
            "accounts for (weights the exporter kept dense or in higher precision, alignment padding"
            + (f", {overhead / 1024:.1f} KiB container overhead" if overhead else "")
            + ")."
        )
    else:
        note = (
            f"artifact is {ratio:.3f}× the theoretical size: {-gap / 1024:.1f} KiB smaller than the per-layer report "
            "predicts (the exporter folded or shared tensors, e.g. BatchNorm fused into convolutions)."
        )
    return {"ratio": ratio, "ok": False, "note": note}
