"""One weight-bearing layer as compression left it: what the engine reports (core.compress) and what the size model
(core.measure.size) and the records read. Below both, so neither imports the other's package for it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


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
