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


# method name → spec class, in definition order (the display order); filled by CompressionSpec subclasses
SPEC_TYPES: dict[str, type[CompressionSpec]] = {}


@dataclass(frozen=True)
class CompressionSpec:
    """Fields every method shares: the workflow and its data/fine-tuning budget, and per-layer overrides.

    A subclass that names its ``method`` registers itself in ``SPEC_TYPES``, so spec parsing knows it.
    """

    method: ClassVar[str] = ""
    workflows: ClassVar[tuple[str, ...]] = WORKFLOWS
    help: ClassVar[str] = ""

    workflow: str = "data_free"
    calibration_samples: int = 128
    epochs: int = 1
    max_steps: int | None = None  # stop fine-tuning after this many optimiser steps (None: full epochs)
    learning_rate: float = 1e-4
    train_limit: int = 10_000  # at most this many training images for fine-tuning
    batch_size: int = 64
    seed: int = 0
    overrides: dict[str, dict | None] = field(default_factory=dict)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.method:
            if cls.method in SPEC_TYPES:
                raise TypeError(f"two spec classes for method {cls.method!r}: {SPEC_TYPES[cls.method].__name__}, {cls.__name__}")
            SPEC_TYPES[cls.method] = cls

    def __post_init__(self) -> None:
        _check_choice(f"workflow for {self.method}", self.workflow, self.workflows)
        _check_int("calibration_samples", self.calibration_samples, minimum=1, maximum=60_000)
        _check_int("epochs", self.epochs, minimum=1, maximum=1000)
        if self.max_steps is not None:
            _check_int("max_steps", self.max_steps, minimum=1)
        _check_float("learning_rate", self.learning_rate, low=0.0, high=10.0, low_open=True)
        _check_int("train_limit", self.train_limit, minimum=1)
        _check_int("batch_size", self.batch_size, minimum=1, maximum=4096)
        _check_int("seed", self.seed, minimum=0)
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

    # ---- per-layer resolution
    @classmethod
    def layer_fields(cls) -> tuple[str, ...]:
        """Fields that may differ per layer (the method's own knobs)."""
        shared = {f.name for f in dataclasses.fields(CompressionSpec)}
        return tuple(f.name for f in dataclasses.fields(cls) if f.name not in shared)

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


@dataclass(frozen=True)
class PalettizeSpec(CompressionSpec):
    """Weight palettization: each weight becomes an index into a small look-up table (LUT)."""

    method: ClassVar[str] = "palettize"
    help: ClassVar[str] = "k-means LUT of 2^n_bits entries per tensor or channel group (coremltools)"

    n_bits: int = 4
    granularity: str = "per_tensor"
    group_size: int = 16
    enable_per_channel_scale: bool = False
    cluster_dim: int = 1
    lut_dtype: str = "float"
    mode: str = "kmeans"
    weight_threshold: int = 2048

    def __post_init__(self) -> None:
        _check_choice("n_bits", self.n_bits, (1, 2, 3, 4, 6, 8))
        _check_choice("granularity", self.granularity, ("per_tensor", "per_grouped_channel"))
        _check_int("group_size", self.group_size, minimum=1)
        _check_choice("enable_per_channel_scale", self.enable_per_channel_scale, (True, False))
        _check_int("cluster_dim", self.cluster_dim, minimum=1, maximum=8)
        _check_choice("lut_dtype", self.lut_dtype, ("float", "int8"))
        _check_choice("mode", self.mode, ("kmeans", "uniform", "unique"))
        _check_int("weight_threshold", self.weight_threshold, minimum=0)
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
        super().__post_init__()

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

    dtype: str = "int8"
    granularity: str = "per_channel"
    block_size: int = 32
    mode: str = "symmetric"
    weight_threshold: int = 2048

    def __post_init__(self) -> None:
        _check_choice("dtype", self.dtype, ("int8", "int4"))
        _check_choice("granularity", self.granularity, ("per_channel", "per_block"))
        _check_int("block_size", self.block_size, minimum=1)
        _check_choice("mode", self.mode, ("symmetric", "asymmetric"))
        _check_int("weight_threshold", self.weight_threshold, minimum=0)
        if self.workflow == "fine_tune" and self.granularity == "per_block":
            raise SpecError(
                "quantize_weights fine_tune (QAT with LinearQuantizer) quantizes per channel only; "
                "use granularity 'per_channel', or the data_free / calibration workflow for per_block."
            )
        super().__post_init__()

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

    workflow: str = "calibration"
    mode: str = "symmetric"
    weight_threshold: int = 0
    weight_per_channel: bool = True  # False: one weight scale per tensor, which must cover its widest channel

    def __post_init__(self) -> None:
        _check_choice("mode", self.mode, ("symmetric", "asymmetric"))
        _check_int("weight_threshold", self.weight_threshold, minimum=0)
        _check_choice("weight_per_channel", self.weight_per_channel, (True, False))
        super().__post_init__()

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

    target_sparsity: float = 0.5
    structure: str = "unstructured"
    block_size: int = 2
    n_m: tuple[int, int] = (2, 4)
    weight_threshold: int = 2048

    def __post_init__(self) -> None:
        if isinstance(self.n_m, list):
            object.__setattr__(self, "n_m", tuple(self.n_m))
        _check_float("target_sparsity", self.target_sparsity, low=0.0, high=1.0, high_open=True)
        _check_choice("structure", self.structure, ("unstructured", "block", "n_m"))
        _check_int("block_size", self.block_size, minimum=2)
        if not (isinstance(self.n_m, tuple) and len(self.n_m) == 2 and all(isinstance(v, int) for v in self.n_m)):
            raise SpecError(f"n_m must be a pair [n, m] of integers; got {self.n_m!r}.")
        n, m = self.n_m
        if not 0 < n < m:
            raise SpecError(f"n_m must satisfy 0 < n < m (n of every m weights are zeroed); got {n}:{m}.")
        _check_int("weight_threshold", self.weight_threshold, minimum=0)
        super().__post_init__()

    @property
    def effective_sparsity(self) -> float:
        return self.n_m[0] / self.n_m[1] if self.structure == "n_m" else self.target_sparsity

    def summary(self) -> str:
        shape = {"unstructured": "", "block": f" in blocks of {self.block_size}",
                 "n_m": f", {self.n_m[0]} of every {self.n_m[1]} weights"}
        return f"{self.effective_sparsity * 100:.0f} % pruning{shape[self.structure]}, {self.workflow_words()}"


@dataclass(frozen=True)
class TorchDynamicSpec(CompressionSpec):
    """PyTorch dynamic quantization of Linear layers (weights ahead of time, activations on the fly)."""

    method: ClassVar[str] = "torch_dynamic"
    workflows: ClassVar[tuple[str, ...]] = ("data_free",)
    help: ClassVar[str] = "PyTorch dynamic quantization of Linear layers only (the first method of a PyTorch ResNet-34 quantization report)"

    dtype: str = "int8"

    def __post_init__(self) -> None:
        _check_choice("dtype", self.dtype, ("int8", "fp16"))
        super().__post_init__()

    def summary(self) -> str:
        return f"PyTorch dynamic {self.dtype} (Linear layers)"


@dataclass(frozen=True)
class TorchStaticSpec(CompressionSpec):
    """PyTorch FX static int8: fused Conv+BN+ReLU, quantized residual adds, real int8 CPU kernels."""

    method: ClassVar[str] = "torch_static"
    workflows: ClassVar[tuple[str, ...]] = ("calibration", "fine_tune")
    help: ClassVar[str] = "PyTorch static int8 (FX graph mode); runs on int8 CPU kernels"

    workflow: str = "calibration"
    backend: str = "x86"  # the qconfig recipe the observers follow (x86's reduce_range activations run on every engine)
    per_channel: bool = True
    # The int8 form the model runs in (core.compress.int8_forms): "auto" times engine × graph form on this machine
    # and keeps the fastest; a name forces one (an engine this CPU lacks fails with the reason).
    engine: str = "auto"
    graph: str = "auto"

    def __post_init__(self) -> None:
        _check_choice("backend", self.backend, ("x86", "fbgemm", "qnnpack", "onednn"))
        _check_choice("per_channel", self.per_channel, (True, False))
        _check_choice("engine", self.engine, ("auto", "x86", "onednn", "fbgemm"))
        _check_choice("graph", self.graph, ("auto", "graph_module", "frozen_torchscript"))
        if self.backend == "qnnpack" and (self.engine, self.graph) != ("auto", "auto"):
            raise SpecError("engine and graph apply to the x86 int8 engines; backend qnnpack runs on qnnpack only, "
                            "so leave engine and graph at 'auto'.")
        super().__post_init__()

    @classmethod
    def layer_fields(cls) -> tuple[str, ...]:
        return tuple(name for name in super().layer_fields() if name not in ("engine", "graph"))  # whole-model choices

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
    method = data.get("method")
    if method not in SPEC_TYPES:
        raise SpecError(f"unknown method {method!r}; choose one of {', '.join(SPEC_TYPES)} (or give 'steps').")
    return SPEC_TYPES[method].from_dict(data)


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
