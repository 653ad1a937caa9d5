"""One descriptor per compression method, registered once.

A method module (``core/compress/<method>.py``) builds a ``MethodDescriptor`` and calls ``register_method``;
everything else — engine, config export, Core ML-side compression of uploaded packages, the theoretical-size
model, the latency note, labels and colours on charts, the pages — asks the registry instead of special-casing
method names. ``method_descriptor("pipeline")`` answers for joint pipelines (prune → palettize / quantize_weights),
which are not a method of their own but combine two registered ones.

Adding a method: write ``core/compress/<method>.py`` with its spec dataclass (every knob a ``core.specs.knob``
field: allowed values, label, help, per-layer, sweep values), handler, ``library_config`` (the only spec → library
config code), snippet, latency note and a ``register_method(MethodDescriptor(...))`` call. The handler is found by
the spec's type (``descriptor_for``); the forms, sweeps and the Learn hand-off read the spec's knobs. Nothing else
lists methods.

The descriptors are filled when ``core.compress`` is imported; importing ``core.compress.registry`` runs the
package's ``__init__`` first, which imports every method module, so the registry is never seen half-empty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# How a method stores a compressed weight: the storage kinds of the theoretical-size model (core.measure.size)
from core.measure.size import (  # noqa: F401  (re-exported: the method modules import them from here)
    STORAGE_KINDS,
    STORAGE_LINEAR,
    STORAGE_LUT,
    STORAGE_SPARSE,
    register_storage,
)

# Display of the two pseudo-methods that are not compression methods.
BASELINE = "baseline"
PIPELINE = "pipeline"
_PSEUDO = {
    BASELINE: ("Baseline (fp16)", "#8c8c8c"),
    PIPELINE: ("Joint pipeline", "#72b7b2"),
}
_UNKNOWN_COLOR = "#bab0ac"

ARTIFACT_MLPACKAGE = "mlpackage"
ARTIFACT_TORCHSCRIPT = "torchscript"


@dataclass(frozen=True)
class CoreMLSide:
    """How the method runs on an uploaded .mlpackage with coremltools.optimize.coreml (data-free only)."""

    op_config: Callable[[Any], dict]  # spec -> the Op…Config fields (raises CompressionError when impossible)
    config_type: str  # "OpPalettizerConfig", "OpLinearQuantizerConfig", "OpMagnitudePrunerConfig"
    function: str  # the coremltools.optimize.coreml function: "palettize_weights", "linear_quantize_weights", …
    # The one knob the Model page's package form asks for (a spec field; its choices / range come from its Knob),
    # with that form's label, help and widget key (cfg.ml.<key>).
    knob: str = ""
    label: str = ""
    help: str = ""
    key: str = ""
    form_range: tuple | None = None  # the slider's span there, when narrower than the knob's own


@dataclass(frozen=True)
class MethodDescriptor:
    """Everything the product knows about one compression method, in one place."""

    name: str  # "palettize"
    label: str  # "Palettize"
    color: str  # chart colour, hex
    source: str  # where the method and its defaults come from, in plain words
    spec_type: type  # the frozen spec dataclass (core.specs, or the method module); the handler is keyed by it
    handler: Callable[..., Any]  # (module_copy, spec, context) -> CompressionResult
    # spec -> the per-layer eligibility check ``(name, layer, layer_spec) -> reason | None`` the handler plans with
    eligibility: Callable[[Any], Callable[..., str | None]]
    # (spec, *, layers=None, fine_tune_steps=None) -> {"api", "config_class", "config", …}: the ONE spec → library
    # config function; the handler builds its library objects from it and the config export writes it.
    library_config: Callable[..., dict]
    # (spec, entry, var) -> the Python lines of the config snippet that compress `model` with this method
    snippet: Callable[[Any, dict, str], str]
    storage: str  # one of STORAGE_KINDS
    latency_note: Callable[..., str]  # (*, spec, result, timed_artifact) -> what the CPU latency means
    runs_int8_kernels: bool = False  # the method can produce a module that runs real int8 CPU kernels
    artifact_kind: str = ARTIFACT_MLPACKAGE  # the file a result is measured by
    coreml_side: CoreMLSide | None = None  # None: needs the PyTorch model
    # rough seconds of a data-free compression per million weights on this CPU, for run-time estimates before
    # any run of the method exists (k-means palettization is the slow one)
    seconds_per_mparam: float = 1.0
    # the engine's plan (layer name → LayerPlan) as library_config's `layers`; default: eligible → spec, else None
    layers_from_plans: Callable[[dict], dict] | None = None
    home_text: str = ""  # the Home page's one-line explanation; "" = not listed there
    # the budget search may refine a too-aggressive setting of this method by keeping its most sensitive layers at an
    # in-budget setting of the same method (per-layer overrides of a weight-only method)
    search_refinable: bool = False

    def __post_init__(self) -> None:
        if self.storage not in STORAGE_KINDS:
            raise ValueError(f"{self.name}: storage must be one of {', '.join(STORAGE_KINDS)}; got {self.storage!r}.")
        if self.artifact_kind not in (ARTIFACT_MLPACKAGE, ARTIFACT_TORCHSCRIPT):
            raise ValueError(f"{self.name}: artifact_kind must be 'mlpackage' or 'torchscript'.")
        if getattr(self.spec_type, "method", None) != self.name:
            raise ValueError(f"{self.name}: spec_type {self.spec_type.__name__} is for {self.spec_type.method!r}.")

    def default_spec(self) -> Any:
        return self.spec_type()

    def planned_layers(self, module: Any, spec: Any) -> dict:
        """The `layers` argument of library_config for `module`: what the handler would plan for each layer."""
        from core.compress.layers import plan_layers
        from core.compress.library_config import layer_specs

        plans = plan_layers(module, spec, self.eligibility(spec))
        return (self.layers_from_plans or layer_specs)(plans)

    def compressed_by_default(
        self, params: int, spec: Any = None, *, layer: Any = None, name: str = ""
    ) -> tuple[bool, str | None]:
        """Would a layer of `params` weights be compressed with `spec` (default: the method's defaults)?

        Returns (yes, None) or (no, the reason). The threshold is the spec's own ``weight_threshold`` (2,048 for
        the weight-only methods, 0 for W8A8). Pass the ``layer`` module to apply the method's full eligibility
        check too (supported layer types — e.g. PyTorch dynamic quantization covers Linear only — and shape limits).
        """
        spec = self.default_spec() if spec is None else spec
        if layer is not None:
            resolved = spec.resolve(name) if name else spec
            if resolved is None:
                return False, "overridden: left uncompressed by an override"
            reason = self.eligibility(resolved)(name, layer, resolved)
            return reason is None, reason
        from core.compress.layers import threshold_reason

        threshold = getattr(spec, "weight_threshold", None)
        reason = None if threshold is None else threshold_reason(int(params), int(threshold))
        return reason is None, reason


METHODS: dict[str, MethodDescriptor] = {}
_BY_SPEC_TYPE: dict[type, Any] = {}  # spec class → its descriptor (the handler is registered on the spec type)
_COMBINATIONS: dict[str, Any] = {}  # "pipeline" → its descriptor (core.compress.pipeline)


def register_method(descriptor: MethodDescriptor) -> MethodDescriptor:
    """Add a method, keyed by its name and by its spec type; registering either twice is a programming error."""
    if descriptor.name in METHODS or descriptor.name in _PSEUDO or descriptor.spec_type in _BY_SPEC_TYPE:
        raise ValueError(f"compression method {descriptor.name!r} is registered twice.")
    METHODS[descriptor.name] = descriptor
    register_storage(method=descriptor.name, storage=descriptor.storage)  # what the theoretical-size model reads
    _BY_SPEC_TYPE[descriptor.spec_type] = descriptor
    return descriptor


def order_methods(names: list[str]) -> None:
    """Put METHODS in this order (the display order); methods not named keep their place after them."""
    ordered = {name: METHODS[name] for name in names if name in METHODS}
    ordered.update({name: d for name, d in METHODS.items() if name not in ordered})
    METHODS.clear()
    METHODS.update(ordered)


def register_combination(descriptor: Any) -> Any:
    """The pipeline descriptor: answers `method_descriptor("pipeline")` but is not a method of its own."""
    if descriptor.name in _COMBINATIONS:
        raise ValueError(f"{descriptor.name!r} is registered twice.")
    _COMBINATIONS[descriptor.name] = descriptor
    _BY_SPEC_TYPE[descriptor.spec_type] = descriptor
    return descriptor


def method_descriptor(name: str) -> MethodDescriptor:
    """The descriptor of a method ("palettize", …) or of "pipeline"; KeyError naming the known ones otherwise."""
    if name in METHODS:
        return METHODS[name]
    if name in _COMBINATIONS:
        return _COMBINATIONS[name]
    raise KeyError(f"unknown compression method {name!r}; known: {', '.join([*METHODS, *_COMBINATIONS])}")


def descriptor_for(spec: Any) -> MethodDescriptor:
    """The descriptor registered on the spec's type (a PipelineSpec answers with the pipeline descriptor)."""
    for cls in type(spec).__mro__:
        if cls in _BY_SPEC_TYPE:
            return _BY_SPEC_TYPE[cls]
    raise KeyError(f"no compression handler is registered for {type(spec).__name__}; known: {', '.join(METHODS)}")


def searchable_methods() -> tuple[str, ...]:
    """Methods whose too-aggressive settings the budget search refines with per-layer overrides."""
    return tuple(name for name, d in METHODS.items() if d.search_refinable)


def sweepable_methods() -> tuple[str, ...]:
    """Methods a custom sweep grid can vary: those whose spec declares sweep values on a knob."""
    return tuple(name for name, d in METHODS.items() if d.spec_type.sweep_axes())


def coreml_side_methods() -> tuple[str, ...]:
    """Methods that compress an uploaded .mlpackage directly (data-free, coremltools.optimize.coreml)."""
    return tuple(name for name, d in METHODS.items() if d.coreml_side is not None)


def home_methods() -> dict[str, str]:
    """Method → the Home page's one-line explanation, for the methods that have one."""
    return {name: d.home_text for name, d in METHODS.items() if d.home_text}


def method_label(name: str | None) -> str:
    """Display name of a method, the baseline, a pipeline or 'prune+palettize' style combinations."""
    key = str(name)
    if key in METHODS:
        return METHODS[key].label
    if key in _PSEUDO:
        return _PSEUDO[key][0]
    return key


def method_color(name: str | None) -> str:
    key = str(name)
    if key in METHODS:
        return METHODS[key].color
    if key in _PSEUDO:
        return _PSEUDO[key][1]
    return _PSEUDO[PIPELINE][1] if "+" in key else _UNKNOWN_COLOR


def methods_of(name: str | None) -> list[MethodDescriptor]:
    """The registered methods named in a per-layer method string ("prune+palettize" → [prune, palettize])."""
    return [METHODS[part] for part in str(name or "").split("+") if part in METHODS]
