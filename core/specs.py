"""Compression specs: one validated dataclass per method, plus joint pipelines.

The plain-dict shape (used by the CLI, the store and the pages)::

    {"method": "palettize", "workflow": "data_free", "n_bits": 4, ...,
     "overrides": {"<layer-name regex>": {<partial spec>} | None}}
    {"steps": [<spec>, <spec>]}

`from_dict` rejects unknown keys and every impossible value with a message that names the field.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml

WORKFLOWS = ("data_free", "calibration", "fine_tune")
WIDGET_KEY_PREFIX = "cfg."  # the pages' persistent widget keys: cfg.<form key>.<field> (kept across page switches)
_UNSET: Any = object()


class SpecError(ValueError):
    """An impossible or unknown compression setting; the message names the field and the allowed values."""


def _check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise SpecError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}.")


def _check_int(name: str, value: Any, *, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{name} must be an integer; got {value!r}.")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise SpecError(f"{name} must be {bound}; got {value}.")


def _check_float(name: str, value: Any, *, low: float, high: float, low_open: bool = False, high_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"{name} must be a number; got {value!r}.")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise SpecError(f"{name} must be in {lo}{low}, {high}{hi}; got {value}.")


# --------------------------------------------------------------------------- knob metadata


@dataclass(frozen=True)
class Knob:
    """Everything known about one setting of a spec: what is allowed, what a form offers, and how it reads.

    Validation (``CompressionSpec.__post_init__``), the Compress page's generic form, the Model page's Core ML
    form, the Learn hand-off and sweep grids all read this, so a value list is written once.
    """

    label: str
    help: str
    kind: str = ""  # "choice", "bool", "int", "float", "pair"; "" = from the default's type (a str default: choice)
    choices: tuple = ()  # the allowed values (and the offered ones unless `options` says otherwise)
    minimum: float | None = None  # numeric range that validation enforces
    maximum: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False  # None is allowed (e.g. max_steps: None = full epochs)
    step: float | None = None  # the form's step for sliders / number inputs
    options: tuple = ()  # values a form offers for a range knob (a select slider)
    form_range: tuple | None = None  # (low, high) a form's slider / number input spans, when narrower than valid
    unit: str = ""  # "bits", "images", "weights" … (shown with values where useful)
    per_layer: bool = False  # may differ per layer (an override key)
    widget: str = ""  # radio | select_slider | selectbox | toggle | slider | number | a custom widget's name
    option_labels: dict = field(default_factory=dict)  # value → the text a form shows for it
    option_format: str = ""  # format spec of a value's text, e.g. "g" or ","
    slider_format: str | None = None  # st.slider's format, e.g. "percent"
    horizontal: bool = False
    column: int | None = None  # column 0–2 of the form; None = full width
    order: int = 0  # place within its column (ties keep the field order)
    enabled_when: dict = field(default_factory=dict)  # field → values under which this knob is enabled
    workflows: tuple[str, ...] = ()  # drawn only under these workflows; () = always
    on_form: bool = True  # False: part of the spec, set by another widget (e.g. torch_static's graph)
    none_as: Any = _UNSET  # what a form shows for None (e.g. 0 steps = full epochs)
    sweep: tuple = ()  # the values a sweep of this method varies by default; () = not swept
    parts: tuple[tuple[str, Knob], ...] = ()  # a pair drawn as separate widgets: ((key, knob), …)

    def value_kind(self, default: Any) -> str:
        if self.kind:
            return self.kind
        if self.choices or isinstance(default, str):
            return "choice"
        if isinstance(default, bool):
            return "bool"
        return "int" if isinstance(default, int) else "float"

    def text(self, value: Any) -> str:
        """How a form shows one value."""
        if value in self.option_labels:
            return str(self.option_labels[value])
        return format(value, self.option_format) if self.option_format else str(value)


def check_n_m(n_m: Any) -> None:
    """An N:M sparsity pattern: a pair of integers with 0 < n < m (n of every m weights are zeroed)."""
    if not (isinstance(n_m, tuple) and len(n_m) == 2 and all(isinstance(v, int) for v in n_m)):
        raise SpecError(f"n_m must be a pair [n, m] of integers; got {n_m!r}.")
    n, m = n_m
    if not 0 < n < m:
        raise SpecError(f"n_m must satisfy 0 < n < m (n of every m weights are zeroed); got {n}:{m}.")


def knob(default: Any, **metadata: Any) -> Any:
    """A spec field with its knob metadata (``Knob``) and default."""
    return field(default=default, metadata={"knob": Knob(**metadata)})


def threshold_knob(default: int) -> Any:
    """The weight_threshold field every weight method shares (layers at or below it stay uncompressed)."""
    return knob(default, label="Weight threshold", minimum=0, form_range=(0, 10_000_000), step=256, unit="weights",
                per_layer=True, widget="number", column=2, order=9,
                help="Layers with this many weights or fewer stay uncompressed: they save little and are fragile.")


@dataclass(frozen=True)
class LayerWidget:
    """The per-layer override widget of a method's form: which knob, and how it reads there."""

    field: str
    label: str
    default: Any
    help: str
    slider_format: str = ""  # "" = plain numbers; else st.slider's format


@dataclass(frozen=True)
class FormInfo:
    """Where and how a method appears on the Compress page."""

    tab: str  # the tab that shows it
    key: str  # widget keys: cfg.<key>.<field>
    caption: str = ""
    kind: str = ""  # in a tab shared by several methods: this method's value in the tab's Kind radio
    kind_label: str = ""
    kind_rank: int = 0  # order within a shared tab (the first is the default)
    layer_widget: LayerWidget | None = None  # the "different setting for these layers" widget; None: skip only
    overrides: bool = True  # offer per-layer overrides at all
    nothing_eligible: str = ""  # said when no layer of the model would be compressed


# method name → spec class, in definition order (the display order); filled by CompressionSpec subclasses
SPEC_TYPES: dict[str, type[CompressionSpec]] = {}

_WORKFLOW_LABELS = {
    "data_free": "Data-free — no data, seconds",
    "calibration": "Calibration — a few hundred images",
    "fine_tune": "Fine-tune — training steps, minutes",
}


def workflow_knob(default: str) -> Any:
    """The workflow field (a method's allowed workflows are its ``workflows`` class attribute)."""
    return knob(default, label="Workflow", choices=WORKFLOWS, widget="radio", horizontal=True,
                option_labels=_WORKFLOW_LABELS,
                help="Data-free uses only the weights; calibration also looks at real inputs; "
                "fine-tune trains the compressed model to recover accuracy.")


@dataclass(frozen=True)
class CompressionSpec:
    """Fields every method shares: the workflow and its data/fine-tuning budget, and per-layer overrides.

    A subclass that names its ``method`` registers itself in ``SPEC_TYPES``, so spec parsing knows it. Every field
    but ``overrides`` carries its ``Knob``; ``__post_init__`` validates each against it, then ``check_combination``
    (a subclass's rules between fields).
    """

    method: ClassVar[str] = ""
    workflows: ClassVar[tuple[str, ...]] = WORKFLOWS
    help: ClassVar[str] = ""
    form: ClassVar[FormInfo | None] = None  # None: not on the Compress page's method tabs

    workflow: str = workflow_knob("data_free")
    calibration_samples: int = knob(128, label="Calibration images", minimum=1, maximum=60_000, unit="images",
                                    options=(16, 32, 64, 128, 256, 512, 1024, 2048), widget="select_slider",
                                    workflows=("calibration",),
                                    help="Class-balanced images from the training pool (never the evaluation images).")
    epochs: int = knob(1, label="Epochs", minimum=1, maximum=1000, form_range=(1, 50), widget="number", column=0,
                       workflows=("fine_tune",), help="Passes over the fine-tuning images.")
    # stop fine-tuning after this many optimiser steps (None: full epochs)
    max_steps: int | None = knob(None, label="Stop after steps (0 = full epochs)", kind="int", minimum=1, optional=True,
                                 none_as=0, form_range=(0, 100_000), step=50, widget="number", column=1,
                                 workflows=("fine_tune",), help="Caps the optimiser steps, to keep demos short.")
    learning_rate: float = knob(1e-4, label="Learning rate", minimum=0.0, maximum=10.0, low_open=True,
                                options=(1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3), option_format="g",
                                widget="select_slider", column=1, workflows=("fine_tune",),
                                help="Small: the model is already trained, fine-tuning only repairs it.")
    train_limit: int = knob(10_000, label="Fine-tuning images", minimum=1, unit="images",
                            options=(500, 1000, 2000, 5000, 10_000, 20_000, 60_000), option_format=",",
                            widget="select_slider", column=2, workflows=("fine_tune",),
                            help="At most this many training images (fewer if the dataset has fewer).")
    batch_size: int = knob(64, label="Batch size", minimum=1, maximum=4096, options=(16, 32, 64, 128, 256),
                           widget="select_slider", column=0, workflows=("fine_tune",), help="Images per optimiser step.")
    seed: int = knob(0, label="Seed", minimum=0, form_range=(0, 2**31 - 1), widget="number",
                     workflows=("calibration", "fine_tune"),
                     help="Fixes which images are drawn and the training order: same seed, same result.")
    overrides: dict[str, dict | None] = field(default_factory=dict)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.method:
            if cls.method in SPEC_TYPES:
                raise TypeError(f"two spec classes for method {cls.method!r}: {SPEC_TYPES[cls.method].__name__}, {cls.__name__}")
            SPEC_TYPES[cls.method] = cls

    def __post_init__(self) -> None:
        shared = set(shared_fields())
        own = [name for name in self.knobs() if name not in shared]
        for name in [*own, *(name for name in self.knobs() if name in shared)]:
            self._check_knob(name)
        self.check_combination()
        self._check_overrides()

    def _check_knob(self, name: str) -> None:
        meta = self.knobs()[name]
        value = getattr(self, name)
        allowed = self.allowed_values(name)
        label = f"workflow for {self.method}" if name == "workflow" else name
        kind = meta.value_kind(self.default_of(name))
        if value is None and meta.optional:
            return
        if allowed:
            _check_choice(label, value, allowed)
        elif kind == "bool":
            _check_choice(label, value, (True, False))
        elif kind == "int":
            _check_int(label, value, minimum=int(meta.minimum or 0),
                       maximum=None if meta.maximum is None else int(meta.maximum))
        elif kind == "float":
            _check_float(label, value, low=meta.minimum, high=meta.maximum, low_open=meta.low_open,
                         high_open=meta.high_open)

    def check_combination(self) -> None:
        """A subclass's rules between fields (after every field passed its own check)."""

    def _check_overrides(self) -> None:
        if not isinstance(self.overrides, dict):
            raise SpecError("overrides must be a mapping of layer-name regex → partial spec or null.")
        for pattern, partial in self.overrides.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise SpecError(f"override pattern {pattern!r} is not a valid regular expression ({exc}).") from None
            if partial is None:
                continue
            if not isinstance(partial, dict):
                raise SpecError(f"override for {pattern!r} must be a partial spec (mapping) or null.")
            allowed = self.layer_fields()
            bad = sorted(set(partial) - set(allowed))
            if bad:
                raise SpecError(
                    f"override for {pattern!r} has unknown key(s) {', '.join(bad)}; "
                    f"per-layer keys for {self.method}: {', '.join(allowed) or 'none'}."
                )
            self.for_layer_values(partial)  # validates the merged values

    # ---- the knobs
    @classmethod
    def knobs(cls) -> dict[str, Knob]:
        """Every field's Knob, in field order."""
        return {f.name: f.metadata["knob"] for f in dataclasses.fields(cls) if "knob" in f.metadata}

    @classmethod
    def own_knobs(cls) -> dict[str, Knob]:
        """The method's own knobs (not the shared workflow and budget fields)."""
        shared = set(shared_fields())
        return {name: meta for name, meta in cls.knobs().items() if name not in shared}

    @classmethod
    def default_of(cls, name: str) -> Any:
        return next(f.default for f in dataclasses.fields(cls) if f.name == name)

    @classmethod
    def allowed_values(cls, name: str) -> tuple:
        """The values a choice knob allows (a method's workflows for 'workflow'); () for a range knob."""
        return cls.workflows if name == "workflow" else cls.knobs()[name].choices

    @classmethod
    def offered_values(cls, name: str) -> tuple:
        """The values a form offers: the knob's options, else its allowed values."""
        return cls.knobs()[name].options or cls.allowed_values(name)

    @classmethod
    def widget_key(cls, name: str) -> str:
        """The Compress page's widget key of a field (or of a part of a pair, e.g. 'n' of n_m)."""
        if cls.form is None:
            raise KeyError(f"{cls.method} has no Compress form.")
        return f"{WIDGET_KEY_PREFIX}{cls.form.key}.{name}"

    @classmethod
    def sweep_axes(cls) -> dict[str, tuple]:
        """Field → the values a sweep varies by default (the knobs that declare `sweep`)."""
        return {name: meta.sweep for name, meta in cls.knobs().items() if meta.sweep}

    # ---- per-layer resolution
    @classmethod
    def layer_fields(cls) -> tuple[str, ...]:
        """Fields that may differ per layer (knobs declared ``per_layer``)."""
        return tuple(name for name, meta in cls.knobs().items() if meta.per_layer)

    def for_layer_values(self, partial: dict) -> CompressionSpec:
        return dataclasses.replace(self, overrides={}, **partial)

    def resolve(self, layer_name: str) -> CompressionSpec | None:
        """The effective spec for one layer: the last matching override wins; None = leave uncompressed."""
        resolved: CompressionSpec | None = dataclasses.replace(self, overrides={})
        for pattern, partial in self.overrides.items():
            if re.search(pattern, layer_name):
                resolved = None if partial is None else self.for_layer_values(partial)
        return resolved

    # ---- serialisation
    def to_dict(self) -> dict:
        out: dict[str, Any] = {"method": self.method}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict) -> CompressionSpec:
        data = dict(data)
        method = data.pop("method", cls.method)
        if method != cls.method:
            raise SpecError(f"spec is for method {method!r}, not {cls.method!r}.")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SpecError(
                f"unknown key(s) for {cls.method}: {', '.join(unknown)}. Allowed: {', '.join(sorted(names))}."
            )
        try:
            return cls(**data)
        except TypeError as exc:  # e.g. a value of an unhashable type where a tuple was expected
            raise SpecError(f"invalid {cls.method} spec: {exc}") from None

    def summary(self) -> str:
        """The setting as a person says it, e.g. '4-bit palettization, groups of 8 channels, data-free'; library
        names (cluster_dim …) appear only as a hint in brackets."""
        return f"{self.method}, {self.workflow_words()}"

    def workflow_words(self) -> str:
        """'data-free', 'calibrated on 128 images' or 'fine-tuned'."""
        return {"data_free": "data-free", "calibration": f"calibrated on {self.calibration_samples:,} images",
                "fine_tune": "fine-tuned"}.get(self.workflow, self.workflow)


def shared_fields() -> tuple[str, ...]:
    """The fields every method has (workflow, data and fine-tuning budget, seed, overrides)."""
    return tuple(f.name for f in dataclasses.fields(CompressionSpec))


def spec_type(method: str) -> type[CompressionSpec]:
    """The spec class of a method. A method module may declare its spec next to its handler
    (core/compress/<method>.py); it registers when the compression package is imported, which every process that
    compresses or shows records does (app.py, the CLI, the workers) — this module sits below it and never imports it."""
    if method not in SPEC_TYPES:
        raise SpecError(f"unknown method {method!r}; choose one of {', '.join(SPEC_TYPES)} (or give 'steps').")
    return SPEC_TYPES[method]


@dataclass(frozen=True)
class PalettizeSpec(CompressionSpec):
    """Weight palettization: each weight becomes an index into a small look-up table (LUT)."""

    method: ClassVar[str] = "palettize"
    help: ClassVar[str] = "k-means LUT of 2^n_bits entries per tensor or channel group (coremltools)"
    form: ClassVar[FormInfo] = FormInfo(
        tab="Palettize", key="palettize",
        caption="k-means LUT of 2^n_bits entries per tensor or channel group (coremltools). "
        "Fewer bits: smaller file, more rounding error.",
        layer_widget=LayerWidget("n_bits", "Bits for those layers", 8, "Their LUT has 2ⁿ entries."))

    n_bits: int = knob(4, label="Bits per weight (LUT of 2ⁿ values)", choices=(1, 2, 3, 4, 6, 8), unit="bits",
                       per_layer=True, widget="select_slider", column=0, sweep=(8, 6, 4, 3, 2),
                       help="8 and 6 bits are nearly lossless; 4 needs care; 3 and below usually need calibration "
                       "or fine-tuning.")
    granularity: str = knob("per_tensor", label="LUT granularity", choices=("per_tensor", "per_grouped_channel"),
                            per_layer=True, widget="radio", column=0,
                            option_labels={"per_tensor": "one LUT per tensor",
                                           "per_grouped_channel": "one LUT per group of output channels"},
                            help="Grouped LUTs fit each group of channels better (coremltools' ResNet50 guide: 4-bit "
                            "with groups of 16 → 4 channels recovers accuracy).")
    group_size: int = knob(16, label="Channels per group", minimum=1, options=(1, 2, 4, 8, 16, 32, 64, 128),
                           unit="channels", per_layer=True, widget="select_slider", column=0,
                           enabled_when={"granularity": ("per_grouped_channel",)},
                           help="Output channels sharing one LUT: smaller groups → more LUTs → better accuracy, "
                           "slightly bigger.")
    enable_per_channel_scale: bool = knob(False, label="Per-channel scale", per_layer=True, widget="toggle", column=2,
                                          help="Normalise each output channel before clustering; helps when channel "
                                          "ranges differ a lot.")
    cluster_dim: int = knob(1, label="Vector size (cluster_dim)", minimum=1, maximum=8, options=(1, 2, 4, 8),
                            unit="weights", per_layer=True, widget="select_slider", column=1,
                            help="Vector palettization: each index selects a vector of this many weights.")
    lut_dtype: str = knob("float", label="LUT values", choices=("float", "int8"), per_layer=True, widget="radio",
                          horizontal=True, column=1, option_labels={"float": "fp16", "int8": "int8 (quantized LUT)"},
                          help="Quantizing the LUT itself to int8 is a joint compression: a little smaller again.")
    mode: str = knob("kmeans", label="How the LUT is chosen", choices=("kmeans", "uniform", "unique"), per_layer=True,
                     widget="radio", column=1, order=-1,
                     option_labels={"kmeans": "k-means clusters", "uniform": "uniform levels",
                                    "unique": "unique values"},
                     help="k-means fits the weight distribution; uniform spaces levels evenly (data-free only); "
                     "unique uses the tensor's own values when it has at most 2ⁿ of them.")
    weight_threshold: int = threshold_knob(2048)

    def check_combination(self) -> None:
        if self.mode != "kmeans" and self.workflow != "data_free":
            raise SpecError(f"palettize mode {self.mode!r} is data-free only; use mode 'kmeans' for {self.workflow}.")
        if self.cluster_dim > 1 and self.granularity == "per_grouped_channel" and self.group_size % self.cluster_dim:
            raise SpecError("with vector palettization, group_size must be a multiple of cluster_dim.")
        # Limits of coremltools itself (the torch-side configs assert on these combinations).
        if self.cluster_dim > 1 and self.enable_per_channel_scale:
            raise SpecError("enable_per_channel_scale cannot be combined with vector palettization (cluster_dim > 1).")
        if self.mode != "kmeans" and self.lut_dtype == "int8":
            raise SpecError(f"lut_dtype 'int8' needs mode 'kmeans'; a {self.mode} LUT is stored in float16.")
        if self.mode == "uniform" and self.cluster_dim > 1:
            raise SpecError("mode 'uniform' builds a scalar LUT; use cluster_dim 1 or mode 'kmeans'.")

    def summary(self) -> str:
        parts = [f"{self.n_bits}-bit palettization"]
        if self.granularity == "per_grouped_channel":
            parts.append(f"groups of {self.group_size} channels")
        if self.cluster_dim > 1:
            parts.append(f"vectors of {self.cluster_dim} weights (cluster_dim {self.cluster_dim})")
        if self.lut_dtype == "int8":
            parts.append("int8 look-up table")
        if self.enable_per_channel_scale:
            parts.append("per-channel scale")
        if self.mode != "kmeans":
            parts.append({"uniform": "evenly spaced levels", "unique": "one entry per distinct value"}[self.mode])
        return ", ".join([*parts, self.workflow_words()])


@dataclass(frozen=True)
class QuantizeWeightsSpec(CompressionSpec):
    """Weight-only linear quantization (int8/int4), per channel or per block."""

    method: ClassVar[str] = "quantize_weights"
    help: ClassVar[str] = "weights stored as int8/int4 with a scale (and zero-point) per channel or block"
    form: ClassVar[FormInfo] = FormInfo(
        tab="Quantize weights", key="qw",
        caption="weights stored as int8/int4 with a scale (and zero-point) per channel or block. "
        "Evenly spaced integer levels instead of a learned LUT.",
        layer_widget=LayerWidget("dtype", "Type for those layers", "int8",
                                 "e.g. keep a sensitive layer in int8 while the rest is int4."))

    dtype: str = knob("int8", label="Integer type", choices=("int8", "int4"), per_layer=True, widget="radio",
                      horizontal=True, column=0, sweep=("int8", "int4"),
                      help="int8: 256 levels, usually lossless; int4: 16 levels, half the size again.")
    granularity: str = knob("per_channel", label="Scale granularity", choices=("per_channel", "per_block"),
                            per_layer=True, widget="radio", column=1,
                            option_labels={"per_channel": "one scale per output channel",
                                           "per_block": "one scale per block of inputs"},
                            help="Blocks follow the weights more closely (better int4 accuracy) at the cost of more "
                            "scales.")
    block_size: int = knob(32, label="Block size", minimum=1, options=(8, 16, 32, 64, 128), unit="inputs",
                           per_layer=True, widget="select_slider", column=1,
                           enabled_when={"granularity": ("per_block",)}, help="Input channels per scale.")
    mode: str = knob("symmetric", label="Grid", choices=("symmetric", "asymmetric"), per_layer=True, widget="radio",
                     horizontal=True, column=0,
                     help="Symmetric grids are centred on zero; asymmetric adds a zero-point for skewed weights.")
    weight_threshold: int = threshold_knob(2048)

    def check_combination(self) -> None:
        if self.workflow == "fine_tune" and self.granularity == "per_block":
            raise SpecError(
                "quantize_weights fine_tune (QAT with LinearQuantizer) quantizes per channel only; "
                "use granularity 'per_channel', or the data_free / calibration workflow for per_block."
            )

    def summary(self) -> str:
        gran = f"blocks of {self.block_size}" if self.granularity == "per_block" else "per channel"
        return f"{self.dtype} weight quantization, {gran}, {self.mode}, {self.workflow_words()}"


@dataclass(frozen=True)
class QuantizeActivationsSpec(CompressionSpec):
    """W8A8: int8 weights (per channel, or one scale per tensor) and int8 activations from calibration statistics
    (LinearQuantizer)."""

    method: ClassVar[str] = "quantize_activations"
    workflows: ClassVar[tuple[str, ...]] = ("calibration", "fine_tune")
    help: ClassVar[str] = "int8 weights and activations; activation ranges from calibration data"
    form: ClassVar[FormInfo] = FormInfo(
        tab="Activations W8A8", key="w8a8",
        caption="int8 weights and activations; activation ranges from calibration data (the LinearQuantizer of "
        "coremltools' ResNet50 guide). On a Neural Engine this is what runs faster; on a Linux CPU it is simulated "
        "in PyTorch.")

    workflow: str = workflow_knob("calibration")
    mode: str = knob("symmetric", label="Grid", choices=("symmetric", "asymmetric"), per_layer=True, widget="radio",
                     horizontal=True, column=0,
                     help="Symmetric int8 (as in coremltools' ResNet50 guide) or with a zero-point.")
    weight_threshold: int = knob(0, label="Weight threshold", minimum=0, form_range=(0, 10_000_000), step=256,
                                 unit="weights", per_layer=True, widget="number", column=1,
                                 help="Layers with this many weights or fewer stay uncompressed: they save little "
                                 "and are fragile.")
    # False: one weight scale per tensor, which must cover its widest channel
    weight_per_channel: bool = knob(True, label="Per-channel weight scales", per_layer=True, widget="toggle", column=0,
                                    help="Off: one int8 scale for each whole weight tensor, which must cover its "
                                    "widest channel. Depthwise convs (MobileNets) can have very different ranges per "
                                    "channel.")

    def summary(self) -> str:
        how = self.workflow_words() if self.workflow == "calibration" else (
            f"{self.workflow_words()} after calibrating on {self.calibration_samples:,} images")
        weights = "" if self.weight_per_channel else ", per-tensor weights"
        return f"int8 weights and activations (W8A8), {self.mode}{weights}, {how}"


@dataclass(frozen=True)
class PruneSpec(CompressionSpec):
    """Magnitude pruning to a target sparsity: unstructured, block-structured or n:m."""

    method: ClassVar[str] = "prune"
    help: ClassVar[str] = "zero the smallest weights; sparse storage keeps only the non-zeros and a bitmask"
    form: ClassVar[FormInfo] = FormInfo(
        tab="Prune", key="prune",
        caption="Zero the smallest weights; sparse storage keeps only the non-zeros and a bitmask. "
        "The file shrinks once enough weights are zero for sparse storage to pay off.",
        layer_widget=LayerWidget("target_sparsity", "Sparsity for those layers", 0.25,
                                 "e.g. prune a sensitive layer less."))

    target_sparsity: float = knob(0.5, label="Target sparsity", minimum=0.0, maximum=1.0, high_open=True,
                                  form_range=(0.0, 0.95), step=0.05, slider_format="percent", unit="share of weights",
                                  per_layer=True, widget="slider", column=1, sweep=(0.5, 0.75, 0.9),
                                  enabled_when={"structure": ("unstructured", "block")},
                                  help="Fraction of weights set to zero (coremltools' ResNet50 guide tried 50 %, "
                                  "75 % and 90 %).")
    structure: str = knob("unstructured", label="Pattern", choices=("unstructured", "block", "n_m"), per_layer=True,
                          widget="radio", column=0,
                          option_labels={"unstructured": "unstructured (any weight)", "block": "blocks of weights",
                                         "n_m": "n:m (n of every m)"},
                          help="Unstructured keeps accuracy best; blocks and n:m suit hardware that skips zeros.")
    block_size: int = knob(2, label="Block size", minimum=2, options=(2, 4, 8, 16), unit="weights", per_layer=True,
                           widget="select_slider", column=1, enabled_when={"structure": ("block",)},
                           help="Weights zeroed together.")
    n_m: tuple[int, int] = knob(
        (2, 4), label="n:m", kind="pair", per_layer=True, column=2, enabled_when={"structure": ("n_m",)},
        help="n of every m consecutive weights are zeroed.",
        parts=(("n", Knob(label="n (zeroed)", kind="int", minimum=1, maximum=15, widget="number",
                          help="n of every m consecutive weights are zeroed.")),
               ("m", Knob(label="m (group)", kind="int", minimum=2, maximum=16, widget="number",
                          help="Group length for n:m sparsity."))))
    weight_threshold: int = threshold_knob(2048)

    def __post_init__(self) -> None:
        if isinstance(self.n_m, list):
            object.__setattr__(self, "n_m", tuple(self.n_m))
        super().__post_init__()

    def check_combination(self) -> None:
        check_n_m(self.n_m)

    @property
    def effective_sparsity(self) -> float:
        return self.n_m[0] / self.n_m[1] if self.structure == "n_m" else self.target_sparsity

    def summary(self) -> str:
        shape = {"unstructured": "", "block": f" in blocks of {self.block_size}",
                 "n_m": f", {self.n_m[0]} of every {self.n_m[1]} weights"}
        return f"{self.effective_sparsity * 100:.0f} % pruning{shape[self.structure]}, {self.workflow_words()}"


_TORCH_INT8 = ("PyTorch's own int8: the only methods here that run on integer CPU kernels, so latency really drops "
               "(as in the PyTorch ResNet-34 quantization report and the PyTorch FX static-quantization guide). "
               "The artifact is TorchScript.")


@dataclass(frozen=True)
class TorchDynamicSpec(CompressionSpec):
    """PyTorch dynamic quantization of Linear layers (weights ahead of time, activations on the fly)."""

    method: ClassVar[str] = "torch_dynamic"
    workflows: ClassVar[tuple[str, ...]] = ("data_free",)
    help: ClassVar[str] = "PyTorch dynamic quantization of Linear layers only (the first method of a PyTorch ResNet-34 quantization report)"
    form: ClassVar[FormInfo] = FormInfo(
        tab="PyTorch int8", key="torch", caption=_TORCH_INT8, kind="dynamic", kind_label="dynamic (Linear layers only)",
        kind_rank=1, overrides=False,
        nothing_eligible="No layer of this model can be quantized dynamically (PyTorch covers Linear layers only), "
        "so it would change nothing.")

    dtype: str = knob("int8", label="Weight type", choices=("int8", "fp16"), per_layer=True, widget="radio",
                      horizontal=True, help="int8 weights with activations quantized on the fly, or fp16 weights.")

    def summary(self) -> str:
        return f"PyTorch dynamic {self.dtype} (Linear layers)"


@dataclass(frozen=True)
class TorchStaticSpec(CompressionSpec):
    """PyTorch FX static int8: fused Conv+BN+ReLU, quantized residual adds, real int8 CPU kernels."""

    method: ClassVar[str] = "torch_static"
    workflows: ClassVar[tuple[str, ...]] = ("calibration", "fine_tune")
    help: ClassVar[str] = "PyTorch static int8 (FX graph mode); runs on int8 CPU kernels"
    form: ClassVar[FormInfo] = FormInfo(
        tab="PyTorch int8", key="torch", caption=_TORCH_INT8, kind="static",
        kind_label="static int8 (weights + activations, fused Conv+BN+ReLU)")

    workflow: str = workflow_knob("calibration")
    # the qconfig recipe the observers follow (x86's reduce_range activations run on every engine)
    backend: str = knob("x86", label="Backend", choices=("x86", "fbgemm", "qnnpack", "onednn"), per_layer=True,
                        widget="selectbox", column=0,
                        help="x86/fbgemm/onednn for Intel and AMD CPUs; qnnpack for ARM. Which is fastest depends on "
                        "the CPU and the model: run each and compare their measured latency ratios on the Compare page.")
    per_channel: bool = knob(True, label="Per-channel weight scales", per_layer=True, widget="toggle", column=1,
                             help="One scale per output channel: better accuracy than one per tensor.")
    # The int8 form the model runs in (core.compress.int8_forms): "auto" times engine × graph form on this machine
    # and keeps the fastest; a name forces one (an engine this CPU lacks fails with the reason). A whole-model
    # choice (not per layer); the form shows engine and graph as one "Int8 form" selector.
    engine: str = knob("auto", label="Int8 form", choices=("auto", "x86", "onednn", "fbgemm"), widget="int8_form",
                       column=2,
                       help="auto: every engine × graph form (GraphModule / traced + frozen TorchScript) is timed once "
                       "on this CPU and the fastest kept; the record says which won and by how much. Or force one form.")
    graph: str = knob("auto", label="Graph form", choices=("auto", "graph_module", "frozen_torchscript"), on_form=False,
                      help="The int8 graph's form: FX GraphModule or traced + frozen TorchScript.")

    def check_combination(self) -> None:
        if self.backend == "qnnpack" and (self.engine, self.graph) != ("auto", "auto"):
            raise SpecError("engine and graph apply to the x86 int8 engines; backend qnnpack runs on qnnpack only, "
                            "so leave engine and graph at 'auto'.")

    def summary(self) -> str:
        form = "" if (self.engine, self.graph) == ("auto", "auto") else f", form {self.engine}/{self.graph}"
        how = self.workflow_words() if self.workflow == "calibration" else (
            f"{self.workflow_words()} after calibrating on {self.calibration_samples:,} images")
        weights = "" if self.per_channel else ", per-tensor weights"
        return f"PyTorch static int8 ({self.backend} recipe){weights}, {how}{form}"


# (first, second) → allowed. Anything else is rejected with the reason below.
_PIPELINE_ORDERS = {("prune", "palettize"), ("prune", "quantize_weights")}
_PIPELINE_REASONS = {
    ("palettize", "prune"): "pruning after palettization would move weights off the LUT; prune first, then palettize",
    ("quantize_weights", "prune"): "pruning after quantization breaks the quantization grid; prune first, then quantize",
    ("palettize", "quantize_weights"): "use palettize with lut_dtype='int8' to quantize the LUT instead",
    ("quantize_weights", "palettize"): "palettizing already-quantized weights is not supported by coremltools",
}


def pipeline_second_steps(first: str) -> tuple[str, ...]:
    """The methods a joint pipeline may run after `first`, in display order."""
    return tuple(m for m in SPEC_TYPES if (first, m) in _PIPELINE_ORDERS)


@dataclass(frozen=True)
class PipelineSpec:
    """A joint pipeline: steps run in order on the same model (sparse + palettized / quantized weights)."""

    steps: tuple[CompressionSpec, ...]
    method: ClassVar[str] = "pipeline"

    def __post_init__(self) -> None:
        if isinstance(self.steps, list):
            object.__setattr__(self, "steps", tuple(self.steps))
        if len(self.steps) != 2:
            raise SpecError("a pipeline has exactly two steps, e.g. prune → palettize.")
        first, second = (s.method for s in self.steps)
        if (first, second) not in _PIPELINE_ORDERS:
            reason = _PIPELINE_REASONS.get(
                (first, second), "supported pipelines are prune → palettize and prune → quantize_weights"
            )
            raise SpecError(f"pipeline {first} → {second} is not supported: {reason}.")

    @property
    def workflow(self) -> str:
        return "fine_tune" if any(s.workflow == "fine_tune" for s in self.steps) else self.steps[-1].workflow

    def to_dict(self) -> dict:
        return {"steps": [s.to_dict() for s in self.steps]}

    @classmethod
    def from_dict(cls, data: dict) -> PipelineSpec:
        unknown = sorted(set(data) - {"steps", "method"})
        if unknown:
            raise SpecError(f"unknown key(s) for a pipeline: {', '.join(unknown)}. A pipeline has only 'steps'.")
        steps = data.get("steps")
        if not isinstance(steps, list):
            raise SpecError("'steps' must be a list of specs.")
        return cls(tuple(_single_from_dict(s) for s in steps))

    def summary(self) -> str:
        return " → ".join(s.summary() for s in self.steps)


AnySpec = CompressionSpec | PipelineSpec


def _single_from_dict(data: Any) -> CompressionSpec:
    if not isinstance(data, dict):
        raise SpecError(f"a spec must be a mapping; got {type(data).__name__}.")
    return spec_type(data.get("method")).from_dict(data)


def spec_from_dict(data: Any) -> AnySpec:
    """Build and validate a spec (or pipeline) from its plain-dict form."""
    if isinstance(data, dict) and "steps" in data:
        return PipelineSpec.from_dict(data)
    return _single_from_dict(data)


def parse_spec(text: str) -> AnySpec:
    """Parse JSON or YAML text into a validated spec."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecError(f"the spec is neither valid JSON nor YAML ({exc}).") from None
    return spec_from_dict(data)


def spec_to_yaml(spec: AnySpec) -> str:
    return yaml.safe_dump(spec.to_dict(), sort_keys=False)


def spec_to_json(spec: AnySpec) -> str:
    return json.dumps(spec.to_dict(), sort_keys=False)
