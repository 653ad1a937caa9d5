"""From a lesson's setting to the Compress page: the nearest whole-model spec, and what differs from the lesson.

The lesson works on one layer and may use settings the Compress page does not offer (a percentile clip, a
per-tensor scale, 2-bit integers); the notes say what the Compress page will use instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.learn.palettization import PaletteSetting
from core.learn.pruning import PruneSetting
from core.learn.quantization import LinearSetting
from core.specs import PalettizeSpec, PruneSpec, QuantizeWeightsSpec

COMPRESS_BLOCK_SIZES = (8, 16, 32, 64, 128)  # the Compress page's per-block choices
COMPRESS_PRUNE_BLOCKS = (2, 4, 8, 16)


@dataclass(frozen=True)
class Handoff:
    """The spec the Compress page should open with, the tab that shows it, and how it differs from the lesson."""

    spec: PalettizeSpec | QuantizeWeightsSpec | PruneSpec
    tab: str
    notes: tuple[str, ...] = ()

    @property
    def fields(self) -> dict[str, object]:
        """The knobs the lesson sets, by spec field (n:m as separate n and m, as the Compress page asks for them)."""
        names = KNOBS[self.spec.method]
        values = {name: getattr(self.spec, name) for name in names if name != "n_m"}
        if "n_m" in names:
            values["n"], values["m"] = self.spec.n_m
        return values


KNOBS = {
    "palettize": ("n_bits", "granularity", "group_size", "enable_per_channel_scale", "cluster_dim", "mode", "workflow"),
    "quantize_weights": ("dtype", "mode", "granularity", "block_size", "workflow"),
    "prune": ("structure", "target_sparsity", "block_size", "n_m", "workflow"),
}


def from_linear(setting: LinearSetting) -> Handoff:
    notes = []
    dtype = "int8" if setting.bits > 4 else "int4"
    if setting.bits not in (4, 8):
        notes.append(f"Compress quantizes to int8 or int4; {setting.bits} bits becomes {dtype}.")
    granularity, block = "per_channel", 32
    if setting.granularity == "per_tensor":
        notes.append("Compress uses at least one scale per output channel, so per tensor becomes per channel.")
    elif setting.granularity == "per_block":
        granularity = "per_block"
        block = min(COMPRESS_BLOCK_SIZES, key=lambda b: abs(b - setting.block_size))
        if block != setting.block_size:
            notes.append(f"Compress offers blocks of {', '.join(map(str, COMPRESS_BLOCK_SIZES))}; block {setting.block_size} becomes {block}.")
    if setting.clip_percentile < 100:
        notes.append("Compress takes the range from min / max (coremltools has no percentile clip for weights).")
    spec = QuantizeWeightsSpec(dtype=dtype, granularity=granularity, block_size=block,
                               mode="symmetric" if setting.symmetric else "asymmetric", workflow="data_free")
    return Handoff(spec=spec, tab="Quantize weights", notes=tuple(notes))


def from_palette(setting: PaletteSetting) -> Handoff:
    spec = PalettizeSpec(
        n_bits=setting.n_bits, granularity=setting.granularity, group_size=setting.group_size,
        enable_per_channel_scale=setting.per_channel_scale, cluster_dim=setting.cluster_dim, mode="kmeans",
        workflow="data_free",
    )
    return Handoff(spec=spec, tab="Palettize")


def from_prune(setting: PruneSetting) -> Handoff:
    notes = []
    block = 2
    if setting.structure == "block":
        block = min(COMPRESS_PRUNE_BLOCKS, key=lambda b: abs(b - setting.block_size))
        if block != setting.block_size:
            notes.append(f"Compress offers blocks of {', '.join(map(str, COMPRESS_PRUNE_BLOCKS))}; block {setting.block_size} becomes {block}.")
    spec = PruneSpec(
        target_sparsity=round(float(setting.sparsity), 2), structure=setting.structure, block_size=block,
        n_m=(setting.n, setting.m), workflow="data_free",
    )
    return Handoff(spec=spec, tab="Prune", notes=tuple(notes))
