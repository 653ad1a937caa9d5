"""What `compress` returns: the compressed module plus an honest per-layer account."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from core.specs import AnySpec


@dataclass
class LayerReport:
    """One weight-bearing layer (Conv/Linear/…); every such layer of the model appears exactly once."""

    name: str
    type: str  # "Conv2d", "Linear", …
    shape: tuple[int, ...]
    params: int  # weight elements
    compressed: bool
    reason: str | None = None  # why not compressed: "below weight_threshold (864 < 2048)", "overridden", …
    method: str | None = None  # "palettize", "prune+palettize", …
    bits: float | None = None  # bits per stored index / quantized value
    granularity: str | None = None
    n_luts: int = 0  # look-up tables (palettize)
    lut_entries: int = 0  # entries per LUT (×cluster_dim values each)
    lut_bits: int = 16  # bits per LUT entry value (16: fp16, 8: int8 LUT)
    n_scales: int = 0  # per-channel / per-block scales (and per-channel-scale of palettization)
    n_zero_points: int = 0
    sparsity: float = 0.0  # fraction of exact zeros after compression
    snr_db: float | None = None  # weight SNR vs original (inf → None for identical)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> LayerReport:
        data = dict(data)
        data["shape"] = tuple(data.get("shape", ()))
        return cls(**data)


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
    # the recipe entry ({"api", "config_class", "config", …}) the handler built its library config from
    library_config: dict | list | None = None
    quantized_engine: str | None = None  # torch.backends.quantized.engine an int8 module was built for (set it before running)
    # torch_static: the int8 form it runs in (engine × graph form), how it was chosen and the timings (int8_forms)
    int8_form: dict | None = None
    # when `module` is a frozen TorchScript form (its tensors folded into the graph): the converted GraphModule whose
    # state_dict holds the same int8 tensors, for size accounting
    payload_module: nn.Module | None = None
