"""References to a job's model, data and options: plain values a worker process (or a Ray task) reloads.

A job never carries a loaded model or dataset: it names them. ``ModelRef`` and ``DataRef`` are frozen
dataclasses with ``to_dict`` / ``from_dict`` (unknown keys rejected), so they travel through SQLite as JSON.
A referenced file that is gone when the job runs fails that job with a one-line reason (``RefError``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.data import Dataset
    from core.experiment_options import ExperimentOptions
    from core.models.sources import LoadedModel

MODEL_KINDS = ("sample", "torchvision", "timm", "state_dict", "torchscript", "exported", "onnx", "mlpackage")
# Graph-form kinds → the source-id prefix the CLI and pages spell them with.
_FILE_PREFIXES = {"torchscript": "torchscript", "exported": "export", "onnx": "onnx", "mlpackage": "mlpackage"}
DATA_KINDS = ("auto", "bundled", "full", "folder", "path", "none")


class RefError(ValueError):
    """A model / data / options reference is malformed or points at something that is gone."""


def _check_keys(cls: type, data: Any) -> dict:
    if not isinstance(data, dict):
        raise RefError(f"{cls.__name__} needs a dict, got {type(data).__name__}.")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise RefError(f"{cls.__name__}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
    return dict(data)


def _file_stamp(path: str | None) -> str:
    """mtime + size of a referenced file: a changed upload never hits a warm worker's stale model."""
    if not path:
        return ""
    try:
        stat = Path(path).stat()
    except OSError:
        return "missing"
    return f"{stat.st_mtime_ns}:{stat.st_size}"


@dataclass(frozen=True)
class ModelRef:
    """Which model a job compresses.

    kind "sample" (name = sample architecture), "torchvision" (name = architecture; optional `path` to a
    state_dict file, or `pretrained` weights from the local hub cache), "timm" (name = a timm model name; optional
    `path` to a checkpoint), "state_dict" (name = architecture,
    `path` = weights file), "torchscript" (`path` = a TorchScript file, e.g. in the store's uploads folder),
    "exported" (`path` = a torch.export .pt2, source id ``export:<path>``), "onnx" (`path` = an .onnx file) or
    "mlpackage" (`path` = an uploaded .mlpackage or a .zip of one: compressed on the Core ML side, never loaded
    into PyTorch; `name` = how the package is labelled).
    """

    kind: str
    name: str = ""
    path: str | None = None
    pretrained: bool = False

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise RefError(f"ModelRef.kind must be one of {', '.join(MODEL_KINDS)}; got {self.kind!r}.")
        if self.kind in ("sample", "torchvision", "timm", "state_dict") and not self.name:
            raise RefError(f"ModelRef.name: a {self.kind} model needs its architecture name.")
        if (self.kind == "state_dict" or self.kind in _FILE_PREFIXES) and not self.path:
            raise RefError(f"ModelRef.path: kind {self.kind!r} needs the file the model is loaded from.")
        if self.kind == "sample" and self.path:
            raise RefError("ModelRef.path: sample models use their bundled weights; use kind 'state_dict' instead.")
        if self.pretrained and (self.kind != "torchvision" or self.path):
            raise RefError("ModelRef.pretrained: only a torchvision model without a weights file can be pretrained.")
        if self.path is not None:
            object.__setattr__(self, "path", str(self.path))

    @classmethod
    def from_source_id(cls, source_id: str, *, weights: str | Path | None = None) -> ModelRef:
        """The reference for a source id as the CLI and pages spell it (sample:…, torchvision:…, state_dict:…:…)."""
        kind, _, rest = source_id.partition(":")
        if kind == "state_dict":
            arch, _, path = rest.partition(":")
            return cls(kind="state_dict", name=arch, path=path or None)
        by_prefix = {prefix: k for k, prefix in _FILE_PREFIXES.items()}
        if kind in by_prefix:
            return cls(kind=by_prefix[kind], path=rest or None)
        if kind == "timm":
            name, _, path = rest.partition(":")  # timm:<name>:<file>, as a loaded timm checkpoint names itself
            chosen = path or (str(weights) if weights is not None else None)
            return cls(kind="timm", name=name, path=chosen)
        if kind == "torchvision" and weights is not None:
            return cls(kind="state_dict", name=rest, path=str(weights))
        if kind == "sample" and weights is not None:
            return cls(kind="state_dict", name=rest, path=str(weights))
        return cls(kind=kind, name=rest)

    @property
    def source_id(self) -> str:
        if self.kind == "state_dict":
            return f"state_dict:{self.name}:{self.path}"
        if self.kind in _FILE_PREFIXES:
            return f"{_FILE_PREFIXES[self.kind]}:{self.path}"
        if self.kind == "timm" and self.path:
            return f"timm:{self.name}:{self.path}"
        return f"{self.kind}:{self.name}"

    def cache_key(self) -> str:
        return f"{json.dumps(self.to_dict(), sort_keys=True)}|{_file_stamp(self.path)}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelRef:
        return cls(**_check_keys(cls, data))


@dataclass(frozen=True)
class DataRef:
    """What a job evaluates (and calibrates) on: one of core.dataset_choice.DATASET_KINDS.

    "folder" needs `path` (an ImageFolder directory or .zip) plus the input size, channels and normalisation.
    "path" is a dataset path as the CLI's ``--data`` takes it (Fashion-MNIST IDX folder, ImageFolder directory or
    .zip), read at the model's own input size and normalisation when the job runs.
    """

    kind: str = "auto"
    path: str | None = None
    image_size: tuple[int, int] | None = None
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in DATA_KINDS:
            raise RefError(f"DataRef.kind must be one of {', '.join(DATA_KINDS)}; got {self.kind!r}.")
        for name in ("image_size", "mean", "std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        if self.path is not None:
            object.__setattr__(self, "path", str(self.path))
        if self.kind == "folder":
            missing = [n for n in ("path", "image_size", "channels", "mean", "std") if getattr(self, n) is None]
            if missing:
                raise RefError(f"DataRef.{missing[0]}: an ImageFolder reference needs {', '.join(missing)}.")
            if len(self.image_size) != 2 or self.channels not in (1, 3):
                raise RefError("DataRef.image_size must be (height, width) and channels 1 or 3.")
            if len(self.mean) != self.channels or len(self.std) != self.channels:
                raise RefError(f"DataRef.mean / std need {self.channels} value(s) each (one per channel).")
        elif self.kind == "path":
            if not self.path:
                raise RefError("DataRef.path: a 'path' reference needs the dataset's file or folder.")
        elif self.path is not None:
            raise RefError(f"DataRef.path is only used by kinds 'folder' and 'path'; got kind {self.kind!r}.")

    def cache_key(self) -> str:
        return f"{json.dumps(self.to_dict(), sort_keys=True)}|{_file_stamp(self.path)}"

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict) -> DataRef:
        return cls(**_check_keys(cls, data))


# --------------------------------------------------------------------------- loading (in the worker)


def load_model_ref(*, ref: ModelRef) -> LoadedModel:
    """Load the referenced model; a file that is gone raises RefError naming it."""
    from core.models.sources import load_model

    if ref.kind == "mlpackage":
        raise RefError("a Core ML package is compressed on the Core ML side (job kind 'mlpackage'); it cannot be "
                       "loaded as a PyTorch model for this job.")
    if ref.path is not None and not Path(ref.path).is_file():
        raise RefError(f"model file {Path(ref.path).name} is gone ({ref.path}); upload it again and resubmit.")
    if ref.kind == "torchvision":
        return load_model(ref.source_id, pretrained=ref.pretrained)
    return load_model(ref.source_id)


def load_data_ref(*, ref: DataRef, model: LoadedModel) -> Dataset | None:
    """The dataset the model is measured on (None: synthetic inputs); a folder / zip that is gone raises RefError."""
    from core.dataset_choice import dataset_for_model, load_dataset_kind

    if ref.kind in ("folder", "path") and not Path(ref.path or "").exists():
        raise RefError(f"dataset {Path(ref.path or '').name} is gone ({ref.path}); upload it again and resubmit.")
    if ref.kind == "path":
        from core.compatibility import check_dataset_fits
        from core.data import resolve_dataset

        dataset = resolve_dataset(choice=str(ref.path), input_shape=model.input_shape, mean=model.mean, std=model.std,
                                  num_classes=model.num_classes, preprocessing=model.preprocessing)
        check_dataset_fits(model=model, dataset=dataset)
        return dataset

    def load() -> Dataset:
        return load_dataset_kind(
            kind=ref.kind,
            path=Path(ref.path) if ref.path else None,
            image_size=ref.image_size,
            channels=ref.channels,
            mean=ref.mean,
            std=ref.std,
            expected_classes=model.num_classes if ref.kind == "folder" else None,
            preprocessing=model.preprocessing if ref.kind == "folder" else None,
        )

    return dataset_for_model(kind=ref.kind, model=model, load=load)


# --------------------------------------------------------------------------- experiment options as a dict

_OPTION_KEYS = (
    "eval_limit",
    "eval_batch_size",
    "synthetic_eval_images",
    "latency",
    "measure_latency",
    "measure_memory",
    "large_batch",
    "export",
    "time_artifact",
    "flipped_limit",
    "validation_images",
    "weights_sample",
    "seed",
)


def options_from_dict(*, data: dict | None, cache_dir: Path | None = None) -> ExperimentOptions:
    """ExperimentOptions from a job's JSON options (unknown keys rejected; `latency` as LatencySettings fields)."""
    from core.experiment_options import ExperimentOptions
    from core.measure.latency import LatencySettings

    data = dict(data or {})
    unknown = sorted(set(data) - set(_OPTION_KEYS))
    if unknown:
        raise RefError(f"unknown experiment option(s) {', '.join(unknown)}; known: {', '.join(_OPTION_KEYS)}.")
    latency = data.pop("latency", None)
    if latency is not None:
        if not isinstance(latency, dict):
            raise RefError("the 'latency' option must be a dict of LatencySettings fields.")
        latency = dict(latency)
        if "batch_sizes" in latency:
            latency["batch_sizes"] = tuple(latency["batch_sizes"])
        try:
            data["latency"] = LatencySettings(**latency)
        except TypeError as exc:
            raise RefError(f"latency option: {exc}") from None
    try:
        return ExperimentOptions(**data, cache_dir=cache_dir)
    except TypeError as exc:
        raise RefError(f"experiment options: {exc}") from None


LATENCY_OVERRIDES_KEY = "latency_overrides"  # LatencySettings fields laid over the model's default settings


def split_latency_overrides(*, data: dict | None) -> tuple[dict, dict | None]:
    """(options without it, the ``latency_overrides`` entry): fields such as ``threads`` / ``batch_sizes`` that
    change the defaults chosen for the model's input size, applied by the worker once the model is loaded."""
    data = dict(data or {})
    overrides = data.pop(LATENCY_OVERRIDES_KEY, None)
    if overrides is not None and not isinstance(overrides, dict):
        raise RefError(f"the '{LATENCY_OVERRIDES_KEY}' option must be a dict of LatencySettings fields.")
    return data, overrides


def apply_latency_overrides(*, options: ExperimentOptions, overrides: dict | None,
                            input_shape: tuple[int, ...]) -> ExperimentOptions:
    """`options` with latency = the model's default settings (or the given ones) with `overrides` laid over."""
    if not overrides:
        return options
    from core.measure.latency import LatencySettings

    fields = {**options.latency_settings(input_shape).to_dict(), **overrides}
    if "batch_sizes" in fields:
        fields["batch_sizes"] = tuple(fields["batch_sizes"])
    try:
        return dataclasses.replace(options, latency=LatencySettings(**fields))
    except TypeError as exc:
        raise RefError(f"latency overrides: {exc}") from None


def options_to_dict(*, options: ExperimentOptions) -> dict:
    """The JSON form of ExperimentOptions that options_from_dict reads back (cache_dir is the worker's own)."""
    data = {key: getattr(options, key) for key in _OPTION_KEYS}
    if options.latency is not None:
        data["latency"] = options.latency.to_dict()
    return json.loads(json.dumps(data, default=list))

