"""From a lesson's setting to the Compress page: the nearest whole-model spec, and what differs from the lesson.

The lesson works on one layer and may use settings the Compress page does not offer (a percentile clip, a
per-tensor scale, 2-bit integers); the notes say what the Compress page will use instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.learn.palettization import PaletteSetting
from core.learn.pruning import PruneSetting
from core.learn.quantization import LinearSetting
from core.specs import (
    AnySpec,
    CompressionSpec,
    PalettizeSpec,
    PruneSpec,
    QuantizeActivationsSpec,
    QuantizeWeightsSpec,
    spec_type,
)

# The Compress page's choices, read from the specs' knobs (the page draws its widgets from the same metadata).
COMPRESS_BLOCK_SIZES = QuantizeWeightsSpec.offered_values("block_size")
COMPRESS_PRUNE_BLOCKS = PruneSpec.offered_values("block_size")
COMPRESS_CALIBRATION = CompressionSpec.offered_values("calibration_samples")
COMPRESS_LEARNING_RATES = CompressionSpec.offered_values("learning_rate")
COMPRESS_BATCH_SIZES = CompressionSpec.offered_values("batch_size")
COMPRESS_TAB_KEY = "learn.compress_tab"  # read by the Compress page's st.tabs(default=…)


def _nearest(options: tuple, value: float) -> float:
    return min(options, key=lambda o: abs(o - value))


def _tab(spec: AnySpec) -> str:
    return spec_type(spec.method).form.tab


@dataclass(frozen=True)
class Handoff:
    """The spec the Compress page should open with, the tab that shows it, and how it differs from the lesson."""

    spec: AnySpec
    tab: str
    notes: tuple[str, ...] = ()

    @property
    def fields(self) -> dict[str, object]:
        """The knobs the lesson sets, by the Compress form's names (a pair such as n:m as its parts n and m)."""
        spec_cls = type(self.spec)
        values: dict[str, object] = {}
        for name in KNOBS.get(self.spec.method) or _form_knobs(spec_cls):
            meta, value = spec_cls.knobs()[name], getattr(self.spec, name)
            if meta.parts:
                values.update({part: item for (part, _), item in zip(meta.parts, value, strict=True)})
            else:
                values[name] = value
        for name, meta in spec_cls.knobs().items():
            if self.spec.workflow in meta.workflows and name != "seed":  # the workflow's budget
                value = getattr(self.spec, name)
                values[name] = meta.none_as if value is None and meta.optional else value
        return values

    def session_values(self) -> dict[str, object]:
        """What to put in session state so the Compress page's widgets (their keys from the spec) open with this
        setting."""
        spec_cls = type(self.spec)
        values: dict[str, object] = {spec_cls.widget_key(name): value for name, value in self.fields.items()}
        values[COMPRESS_TAB_KEY] = self.tab
        return values


def _form_knobs(spec_cls: type[CompressionSpec]) -> tuple[str, ...]:
    """A method no lesson teaches: every knob of its form and its workflow."""
    return (*(name for name, meta in spec_cls.own_knobs().items() if meta.on_form), "workflow")


# The knobs each lesson sets (the rest of the Compress form keeps its values).
KNOBS = {
    "palettize": ("n_bits", "granularity", "group_size", "enable_per_channel_scale", "cluster_dim", "mode", "workflow"),
    "quantize_weights": ("dtype", "mode", "granularity", "block_size", "workflow"),
    "prune": ("structure", "target_sparsity", "block_size", "n_m", "workflow"),
    "quantize_activations": ("mode", "weight_per_channel", "workflow"),
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
    return Handoff(spec=spec, tab=_tab(spec), notes=tuple(notes))


def from_palette(setting: PaletteSetting) -> Handoff:
    spec = PalettizeSpec(
        n_bits=setting.n_bits, granularity=setting.granularity, group_size=setting.group_size,
        enable_per_channel_scale=setting.per_channel_scale, cluster_dim=setting.cluster_dim, mode="kmeans",
        workflow="data_free",
    )
    return Handoff(spec=spec, tab=_tab(spec))


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
    return Handoff(spec=spec, tab=_tab(spec), notes=tuple(notes))


def from_activations(*, observer: str, images: int, symmetric: bool) -> Handoff:
    """W8A8 with calibration on about as many images as the lesson used."""
    notes = []
    samples = int(_nearest(COMPRESS_CALIBRATION, images))
    if samples != images:
        notes.append(f"Compress calibrates on {', '.join(map(str, COMPRESS_CALIBRATION))} images; {images} becomes {samples}.")
    if observer != "moving_average":
        notes.append("Compress runs coremltools' LinearQuantizer, whose activation observer is the moving-average min/max.")
    spec = QuantizeActivationsSpec(mode="symmetric" if symmetric else "asymmetric", workflow="calibration",
                                   calibration_samples=samples)
    return Handoff(spec=spec, tab=_tab(spec), notes=tuple(notes))


def from_finetune(*, bits: int, steps: int, learning_rate: float, batch_size: int) -> Handoff:
    """Fine-tuning at the lesson's width: int4 / int8 quantization (QAT), or a k-means LUT of 2ⁿ entries (DKM)."""
    notes = []
    lr = float(_nearest(COMPRESS_LEARNING_RATES, learning_rate))
    batch = int(_nearest(COMPRESS_BATCH_SIZES, batch_size))
    common = {"workflow": "fine_tune", "max_steps": int(steps), "learning_rate": lr, "batch_size": batch, "epochs": 1}
    if bits in (4, 8):
        spec: AnySpec = QuantizeWeightsSpec(dtype=f"int{bits}", granularity="per_channel", mode="symmetric", **common)
    else:
        spec = PalettizeSpec(n_bits=bits, mode="kmeans", **common)
        notes.append(f"Compress fine-tunes {bits}-bit weights as a k-means LUT (coremltools' DKMPalettizer); its "
                     "integer quantizer offers only int4 and int8.")
    return Handoff(spec=spec, tab=_tab(spec), notes=tuple(notes))


def from_spec(spec: AnySpec) -> Handoff:
    """A whole-model spec the lesson already ran (lesson 7), as it is."""
    return Handoff(spec=spec, tab=_tab(spec))
