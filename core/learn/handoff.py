"""From a lesson's setting to the Compress page: the nearest whole-model spec, and what differs from the lesson.

The lesson works on one layer and may use settings the Compress page does not offer (a percentile clip, a
per-tensor scale, 2-bit integers); the notes say what the Compress page will use instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.learn.palettization import PaletteSetting
from core.learn.pruning import PruneSetting
from core.learn.quantization import LinearSetting
from core.specs import AnySpec, PalettizeSpec, PruneSpec, QuantizeActivationsSpec, QuantizeWeightsSpec

COMPRESS_BLOCK_SIZES = (8, 16, 32, 64, 128)  # the Compress page's per-block choices
COMPRESS_PRUNE_BLOCKS = (2, 4, 8, 16)
COMPRESS_CALIBRATION = (16, 32, 64, 128, 256, 512, 1024, 2048)  # its calibration-image choices
COMPRESS_LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3)
COMPRESS_BATCH_SIZES = (16, 32, 64, 128, 256)
# The Compress page's widget keys per method (pages/2_Compress.py: cfg.<prefix>.<field>) and its tab per method.
COMPRESS_PREFIX = {"palettize": "cfg.palettize.", "quantize_weights": "cfg.qw.", "prune": "cfg.prune.",
                   "quantize_activations": "cfg.w8a8."}
COMPRESS_TABS = {"palettize": "Palettize", "quantize_weights": "Quantize weights", "prune": "Prune",
                 "quantize_activations": "Activations W8A8"}
COMPRESS_TAB_KEY = "learn.compress_tab"  # read by the Compress page's st.tabs(default=…)


def _nearest(options: tuple, value: float) -> float:
    return min(options, key=lambda o: abs(o - value))


@dataclass(frozen=True)
class Handoff:
    """The spec the Compress page should open with, the tab that shows it, and how it differs from the lesson."""

    spec: AnySpec
    tab: str
    notes: tuple[str, ...] = ()

    @property
    def fields(self) -> dict[str, object]:
        """The knobs the lesson sets, by spec field (n:m as separate n and m, as the Compress page asks for them)."""
        names = KNOBS[self.spec.method]
        values = {name: getattr(self.spec, name) for name in names if name != "n_m"}
        if "n_m" in names:
            values["n"], values["m"] = self.spec.n_m
        if self.spec.workflow == "calibration":
            values["calibration_samples"] = self.spec.calibration_samples
        if self.spec.workflow == "fine_tune":
            values.update(epochs=self.spec.epochs, max_steps=self.spec.max_steps or 0,
                          learning_rate=self.spec.learning_rate, batch_size=self.spec.batch_size)
        return values

    def session_values(self) -> dict[str, object]:
        """What to put in session state so the Compress page's widgets (cfg.* keys) open with this setting."""
        prefix = COMPRESS_PREFIX[self.spec.method]
        values: dict[str, object] = {prefix + name: value for name, value in self.fields.items()}
        values[COMPRESS_TAB_KEY] = self.tab
        return values


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
    return Handoff(spec=spec, tab=COMPRESS_TABS[spec.method], notes=tuple(notes))


def from_palette(setting: PaletteSetting) -> Handoff:
    spec = PalettizeSpec(
        n_bits=setting.n_bits, granularity=setting.granularity, group_size=setting.group_size,
        enable_per_channel_scale=setting.per_channel_scale, cluster_dim=setting.cluster_dim, mode="kmeans",
        workflow="data_free",
    )
    return Handoff(spec=spec, tab=COMPRESS_TABS[spec.method])


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
    return Handoff(spec=spec, tab=COMPRESS_TABS[spec.method], notes=tuple(notes))


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
    return Handoff(spec=spec, tab=COMPRESS_TABS[spec.method], notes=tuple(notes))


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
    return Handoff(spec=spec, tab=COMPRESS_TABS[spec.method], notes=tuple(notes))


def from_spec(spec: AnySpec) -> Handoff:
    """A whole-model spec the lesson already ran (lesson 7), as it is."""
    return Handoff(spec=spec, tab=COMPRESS_TABS[spec.method])
