"""What `compress` returns: the compressed module plus an honest per-layer account."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from core.layer_report import LayerReport
from core.specs import AnySpec


@dataclass
class CompressionResult:
    """The compressed copy (the input model is never modified) and everything known about how it was made."""

    module: nn.Module  # evaluate this (fake-quant/decompressed weights, or a real int8 module)
    spec: AnySpec
    seconds: float  # wall time of compression
    layers: list[LayerReport]
    runs_int8_kernels: bool = False  # torch_static / torch_dynamic int8: real int8 CPU kernels
    calibration_source: str | None = None  # "Fashion-MNIST train (128 images)" / "synthetic inputs (…)"
    notes: list[str] = field(default_factory=list)  # captured library warnings, refusals, caveats
    weights: dict = field(default_factory=dict)  # layer name → {"original": Tensor, "compressed": Tensor, "lut"/"scale"/"threshold"…} for histograms
    artifact_path: Path | None = None  # filled by export
    artifact_kind: str | None = None  # "mlpackage" | "torchscript"
    # the config entry ({"api", "config_class", "config", …}) the handler built its library config from
    library_config: dict | list | None = None
    quantized_engine: str | None = None  # torch.backends.quantized.engine an int8 module was built for (set it before running)
    # torch_static: the int8 form it runs in (engine × graph form), how it was chosen and the timings (int8_forms)
    int8_form: dict | None = None
    # when `module` is a frozen TorchScript form (its tensors folded into the graph): the converted GraphModule whose
    # state_dict holds the same int8 tensors, for size accounting
    payload_module: nn.Module | None = None
