"""Per-layer sensitivity: compress ONE layer at a time with one setting and measure what it does to the outputs.

For every weight layer × setting (palettize 2/3/4/6/8 bits, int4/int8 weights, prune 50/75 %) the layer alone is
compressed by the same handler ``core.compress.compress`` runs for the whole model — on a container that holds
just that layer under its own dotted name, so the library sees the same module, name and per-layer config — and
the compressed layer is swapped into one working copy of the model. The model's outputs on a fixed evaluation
slice (≤ 1,000 class-balanced images, or seeded synthetic inputs with purpose "evaluation" when there is no
dataset) are compared with the baseline outputs, which are computed once:

* ``snr_db`` / ``psnr_db``: output (logit) SNR / PSNR against the uncompressed model (higher = closer);
* ``top1_change``: top-1 accuracy of the model with this one layer compressed minus the baseline's, as a
  fraction (−0.004 = −0.4 points); NaN without labels;
* ``layer_bytes``: the layer's stored bytes under the setting, from the size model (core.measure.size), next to
  ``layer_bytes_fp16`` and ``layer_share`` (the layer's share of the fp16 model's bytes).

No package is exported per probe. Probes use ``weight_threshold=0`` so that every weight layer gets a number.
Results are cached under ``core.paths.cache_dir()/sensitivity/<key>`` (key: model fingerprint, data, settings).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from core.baseline import model_fingerprint
from core.compress import compress
from core.compress.applicability import graph_unavailable_reason
from core.compress.layers import weight_layers
from core.data import Dataset, synthetic_inputs
from core.evaluation import eval_set_words
from core.measure.quality import collect_logits, output_psnr_db, snr_db, top1_agreement, topk_accuracy
from core.measure.size import float_param_count, layer_storage_bits
from core.measure.weights import weight_arrays
from core.models.sources import LoadedModel
from core.paths import cache_dir
from core.progress import Progress, as_progress, quiet_libraries
from core.specs import CompressionSpec, SpecError, spec_from_dict

CACHE_VERSION = 1
MAX_EVAL_IMAGES = 1000
HISTOGRAM_VALUES = 20_000  # weight values per layer kept for the probe histograms


@dataclass(frozen=True)
class ProbeSetting:
    """One setting a layer is probed with: a data-free spec for a single method."""

    key: str
    label: str
    spec: dict  # {"method": …, <per-layer knobs>}; weight_threshold and workflow are added by `probe_spec`

    @property
    def method(self) -> str:
        return str(self.spec["method"])

    @property
    def layer_values(self) -> dict:
        """The per-layer override that applies this setting inside a spec of the same method."""
        return {k: v for k, v in self.spec.items() if k != "method"}

    def probe_spec(self) -> CompressionSpec:
        spec = spec_from_dict({**self.spec, "workflow": "data_free", "weight_threshold": 0})
        assert isinstance(spec, CompressionSpec)
        return spec


SETTINGS: dict[str, ProbeSetting] = {
    s.key: s
    for s in (
        ProbeSetting("pal2", "palettize 2-bit", {"method": "palettize", "n_bits": 2}),
        ProbeSetting("pal3", "palettize 3-bit", {"method": "palettize", "n_bits": 3}),
        ProbeSetting("pal4", "palettize 4-bit", {"method": "palettize", "n_bits": 4}),
        ProbeSetting("pal6", "palettize 6-bit", {"method": "palettize", "n_bits": 6}),
        ProbeSetting("pal8", "palettize 8-bit", {"method": "palettize", "n_bits": 8}),
        ProbeSetting("int4", "int4 weights", {"method": "quantize_weights", "dtype": "int4"}),
        ProbeSetting("int8", "int8 weights", {"method": "quantize_weights", "dtype": "int8"}),
        ProbeSetting("prune50", "prune 50 %", {"method": "prune", "target_sparsity": 0.5}),
        ProbeSetting("prune75", "prune 75 %", {"method": "prune", "target_sparsity": 0.75}),
    )
}
DEFAULT_SETTINGS = ("pal2", "pal3", "pal4", "pal6", "pal8")

COLUMNS = (
    "layer", "order", "type", "params", "setting", "setting_label", "method", "compressed", "reason",
    "snr_db", "psnr_db", "top1_change", "agreement", "weight_snr_db", "bits_per_weight",
    "layer_bytes", "layer_bytes_fp16", "bytes_saved", "layer_share",
)


class SensitivityError(ValueError):
    """A sensitivity analysis that cannot run as asked; the message says why and what to do."""


@dataclass(frozen=True)
class SensitivityConfig:
    """What a sensitivity analysis probes and on how much data."""

    settings: tuple[str, ...] = DEFAULT_SETTINGS
    eval_limit: int = MAX_EVAL_IMAGES  # labelled images (class-balanced, seeded); at most 1,000
    synthetic_images: int = 64  # inputs when the model has no dataset
    seed: int = 0
    batch_size: int = 250

    def __post_init__(self) -> None:
        if isinstance(self.settings, list):
            object.__setattr__(self, "settings", tuple(self.settings))
        if not isinstance(self.settings, tuple) or not self.settings:
            raise SensitivityError("settings: choose at least one setting to probe.")
        unknown = [s for s in self.settings if s not in SETTINGS]
        if unknown:
            raise SensitivityError(f"settings: unknown {', '.join(map(str, unknown))}; choose from {', '.join(SETTINGS)}.")
        if len(set(self.settings)) != len(self.settings):
            raise SensitivityError("settings: each setting may be listed once.")
        for name, value, top in (("eval_limit", self.eval_limit, MAX_EVAL_IMAGES), ("synthetic_images", self.synthetic_images, 1000),
                                 ("batch_size", self.batch_size, 4096)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise SensitivityError(f"{name} must be an integer between 1 and {top}; got {value!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**30:
            raise SensitivityError(f"seed must be an integer between 0 and 2**30 - 1; got {self.seed!r}.")

    def to_dict(self) -> dict:
        return {"settings": list(self.settings), "eval_limit": self.eval_limit, "synthetic_images": self.synthetic_images,
                "seed": self.seed, "batch_size": self.batch_size}

    @classmethod
    def from_dict(cls, data: dict) -> SensitivityConfig:
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise SensitivityError(f"unknown sensitivity option(s) {', '.join(unknown)}.")
        return cls(**{**data, "settings": tuple(data.get("settings", DEFAULT_SETTINGS))})


@dataclass
class SensitivityResult:
    """The probe table plus what it was measured on; `folder` holds the cached files (histograms)."""

    frame: pd.DataFrame
    meta: dict
    folder: Path | None = None
    from_cache: bool = False

    @property
    def has_labels(self) -> bool:
        return bool(self.meta.get("has_labels"))

    def probe_weights(self, *, layer: str, setting: str) -> dict[str, np.ndarray]:
        """The histogram arrays of one probe: original / compressed weight samples (same positions), LUT, scales."""
        if self.folder is None or not (self.folder / "weights.npz").is_file():
            return {}
        out: dict[str, np.ndarray] = {}
        with np.load(self.folder / "weights.npz", allow_pickle=False) as npz:
            for key in npz.files:
                owner, _, kind = key.rpartition("/")
                if owner == f"{layer}|{setting}":
                    out[kind] = npz[key]
        return out


# --------------------------------------------------------------------------- evaluation data


@dataclass
class _Slice:
    batches: list[tuple[torch.Tensor, torch.Tensor | None]]
    labels: torch.Tensor | None
    description: str
    key: str
    images: int = 0
    notes: list[str] = field(default_factory=list)


def _eval_slice(*, model: LoadedModel, dataset: Dataset | None, config: SensitivityConfig) -> _Slice:
    if dataset is not None:
        split = dataset.eval_split(limit=config.eval_limit, seed=config.seed)
        batches = list(dataset.batches(split, batch_size=config.batch_size))
        note = dataset.eval_subset_note(limit=config.eval_limit, seed=config.seed)
        return _Slice(
            batches=[(x, y) for x, y in batches], labels=split.labels.clone(), images=len(split),
            description=eval_set_words(images=len(split), dataset=dataset.name, source=dataset.source)
            + f", a class-balanced sample (seed {config.seed})",
            key=f"{dataset.fingerprint}|{len(split)}|{config.seed}", notes=[note] if note else [],
        )
    inputs = synthetic_inputs(input_shape=model.input_shape, count=config.synthetic_images, seed=config.seed, purpose="evaluation")
    shape = "×".join(map(str, model.input_shape))
    batch = min(config.batch_size, 16 if int(np.prod(model.input_shape)) > 64 * 64 * 3 else 256)
    return _Slice(
        batches=[(inputs[i : i + batch], None) for i in range(0, len(inputs), batch)], labels=None, images=len(inputs),
        description=f"synthetic inputs ({len(inputs)} standard-normal {shape} tensors, seed {config.seed}); output SNR only",
        key=f"synthetic|{shape}|{len(inputs)}|{config.seed}",
        notes=[f"{model.label} has no matching dataset: only output SNR / PSNR are measured (no top-1 change)."],
    )


def _as_logits(output: object) -> torch.Tensor:
    """A model's output as N × classes float logits (a tensor, the first of a tuple, the first tensor of a dict)."""
    if isinstance(output, tuple | list):
        output = output[0]
    elif isinstance(output, dict):
        output = next(v for v in output.values() if isinstance(v, torch.Tensor))
    assert isinstance(output, torch.Tensor)
    if output.is_quantized:
        output = output.dequantize()
    return output.detach().float().reshape(len(output), -1)


def _logits(module: nn.Module, data: _Slice) -> torch.Tensor:
    return collect_logits(module=module, batches=[x for x, _ in data.batches]).logits


# --------------------------------------------------------------------------- cache


def cache_key(*, model: LoadedModel, dataset: Dataset | None, config: SensitivityConfig) -> str:
    """Model weights + evaluation data + settings (+ this module's version): the same key, the same table."""
    if dataset is not None:
        data = f"{dataset.fingerprint}|{min(config.eval_limit, len(dataset.test))}|{config.seed}"
    else:
        data = f"synthetic|{model.input_shape}|{config.synthetic_images}|{config.seed}"
    specs = [SETTINGS[s].spec for s in config.settings]
    text = json.dumps([CACHE_VERSION, model_fingerprint(model), data, specs], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:24]


def sensitivity_root(cache_root: Path | None = None) -> Path:
    return (cache_root or cache_dir()) / "sensitivity"


def load_cached(*, key: str, cache_root: Path | None = None) -> SensitivityResult | None:
    """A cached result by key, or None (missing or unreadable: it is simply recomputed)."""
    folder = sensitivity_root(cache_root) / key
    try:
        frame = pd.read_csv(folder / "frame.csv", keep_default_na=True)
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    frame["reason"] = frame["reason"].astype(object).where(frame["reason"].notna(), None)
    return SensitivityResult(frame=frame, meta=meta, folder=folder, from_cache=True)


def _write_cache(*, key: str, frame: pd.DataFrame, meta: dict, arrays: dict[str, np.ndarray], cache_root: Path | None) -> Path:
    root = sensitivity_root(cache_root)
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{key}.{os.getpid()}.{time.time_ns()}"
    staging.mkdir()
    try:
        frame.to_csv(staging / "frame.csv", index=False)
        (staging / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        if arrays:
            with open(staging / "weights.npz", "wb") as fh:
                np.savez_compressed(fh, **arrays)
        final = root / key
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        return final
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------- one probe


def _single_layer_model(model: LoadedModel, name: str, layer: nn.Module) -> LoadedModel:
    """A model that holds only `layer`, under its own dotted name (compress() deep-copies it; `layer` is untouched)."""
    root = nn.Module()
    parent = root
    *path, leaf = name.split(".")
    for part in path:
        child = nn.Module()
        parent.add_module(part, child)
        parent = child
    parent.add_module(leaf, layer)
    return dataclasses.replace(model, module=root)


def _set_submodule(root: nn.Module, name: str, layer: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, layer)


class PartialForward:
    """The model's forward with one layer replaced, re-running only what depends on that layer.

    With a torch.fx trace of the model, everything upstream of (or beside) the probed layer is computed once per
    batch and shared by all of that layer's settings; only the nodes downstream of it run again per setting —
    the same operations on the same values, so the outputs equal a full forward. A model fx cannot trace runs the
    full forward per setting instead (same numbers, slower).
    """

    def __init__(self, module: nn.Module, graph_module: torch.fx.GraphModule | None) -> None:
        self.module = module
        self.graph_module = graph_module

    @classmethod
    def build(cls, module: nn.Module) -> PartialForward:
        try:
            graph_module = torch.fx.symbolic_trace(module)
        except Exception:  # any tracing failure: fall back to full forwards
            graph_module = None
        return cls(module, graph_module)

    def _downstream(self, layer_name: str) -> set | None:
        assert self.graph_module is not None
        starts = [n for n in self.graph_module.graph.nodes if n.op == "call_module" and n.target == layer_name]
        if not starts:
            return None
        seen: set = set()
        stack = list(starts)
        while stack:
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                stack.extend(node.users)
        return seen

    def outputs(
        self, *, layer_name: str, replacements: dict[str, nn.Module], batches: list[torch.Tensor],
        progress: Progress, label: str,
    ) -> dict[str, torch.Tensor]:
        """Logits over `batches` for each replacement of `layer_name` (key → layer)."""
        if not replacements:
            return {}
        downstream = self._downstream(layer_name) if self.graph_module is not None else None
        collected: dict[str, list[torch.Tensor]] = {key: [] for key in replacements}
        with torch.inference_mode():
            for index, inputs in enumerate(batches):
                progress.update(index / len(batches), label)
                if downstream is None:
                    for key, layer in replacements.items():
                        collected[key].append(self._full(layer_name, layer, inputs))
                else:
                    for key, logits in self._partial(layer_name, replacements, inputs, downstream).items():
                        collected[key].append(logits)
        progress.update(1.0, label)
        return {key: torch.cat(parts) for key, parts in collected.items()}

    def _full(self, layer_name: str, layer: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        original = self.module.get_submodule(layer_name)
        _set_submodule(self.module, layer_name, layer)
        try:
            return _as_logits(self.module(inputs))
        finally:
            _set_submodule(self.module, layer_name, original)

    def _partial(self, layer_name: str, replacements: dict[str, nn.Module], inputs: torch.Tensor, downstream: set) -> dict[str, torch.Tensor]:
        graph_module = self.graph_module
        assert graph_module is not None
        interpreter = torch.fx.Interpreter(graph_module)
        nodes = list(graph_module.graph.nodes)
        shared: dict = {}
        for node in nodes:
            if node.op == "placeholder":
                shared[node] = inputs
            elif node not in downstream and node.op != "output":
                interpreter.env = shared
                shared[node] = interpreter.run_node(node)
        original = graph_module.get_submodule(layer_name)
        out: dict[str, torch.Tensor] = {}
        try:
            for key, layer in replacements.items():
                _set_submodule(graph_module, layer_name, layer)
                env = dict(shared)
                interpreter.env = env
                result = None
                for node in nodes:
                    if node in downstream or node.op == "output":
                        value = interpreter.run_node(node)
                        env[node] = value
                        if node.op == "output":
                            result = value
                out[key] = _as_logits(result)
        finally:
            _set_submodule(graph_module, layer_name, original)
        return out


def compress_one_layer(*, model: LoadedModel, layer_name: str, setting: ProbeSetting):
    """The CompressionResult of `setting` applied to `layer_name` alone (the same handler and per-layer config a
    whole-model spec with this layer's override would use); its module holds just that layer."""
    layer = model.module.get_submodule(layer_name)
    return compress(model=_single_layer_model(model, layer_name, layer), spec=setting.probe_spec(), dataset=None)


def single_layer_spec(*, setting: ProbeSetting, layer_name: str) -> CompressionSpec:
    """The whole-model spec equivalent to one probe: every other layer left uncompressed by an override."""
    spec = setting.probe_spec()
    return dataclasses.replace(spec, overrides={"": None, f"^{re.escape(layer_name)}$": {}})


# --------------------------------------------------------------------------- the analysis


def run_sensitivity(
    *,
    model: LoadedModel,
    dataset: Dataset | None,
    config: SensitivityConfig | None = None,
    progress: Progress | None = None,
    cache_root: Path | None = None,
    use_cache: bool = True,
) -> SensitivityResult:
    """Probe every weight layer of `model` with every setting of `config`; cached by model, data and settings.

    Run it in a worker (job kind ``sensitivity``, core.explore.sensitivity_job) or a command-line process; a cancel
    (``Cancelled`` from `progress`) stops it before anything is cached.
    """
    config = config or SensitivityConfig()
    progress = as_progress(progress)
    quiet_libraries()
    unavailable = graph_unavailable_reason(model=model)
    if unavailable:
        raise SensitivityError(f"sensitivity needs real Conv/Linear layers: {unavailable}.")
    key = cache_key(model=model, dataset=dataset, config=config)
    if use_cache:
        cached = load_cached(key=key, cache_root=cache_root)
        if cached is not None:
            progress.update(1.0, "Sensitivity loaded from the cache")
            return cached
    layers = weight_layers(model.module)
    if not layers:
        raise SensitivityError(f"{model.label} has no weight layers (Conv/Linear) to probe.")
    started = time.perf_counter()
    data = _eval_slice(model=model, dataset=dataset, config=config)
    progress.update(0.0, "Evaluating the baseline once")
    probe = _Probe.start(model=model, data=data, config=config)
    rows: list[dict] = []
    for order, (name, layer) in enumerate(layers.items()):
        rows += probe.layer(order=order, name=name, layer=layer, progress=progress, total_layers=len(layers))
    progress.update(1.0, f"Probed {len(layers)} layers × {len(config.settings)} settings")
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    meta = _meta(key=key, model=model, config=config, data=data, layers=layers, probe=probe,
                 seconds=time.perf_counter() - started)
    folder = _write_cache(key=key, frame=frame, meta=meta, arrays=probe.arrays, cache_root=cache_root)
    return SensitivityResult(frame=frame, meta=meta, folder=folder)


@dataclass
class _Probe:
    """What every layer's probes share: the model, the evaluation slice, the baseline outputs, one partial
    forward, and the histogram samples collected so far."""

    model: LoadedModel
    data: _Slice
    config: SensitivityConfig
    baseline: torch.Tensor
    baseline_top1: float | None
    fp16_total: float
    forward: PartialForward
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def start(cls, *, model: LoadedModel, data: _Slice, config: SensitivityConfig) -> _Probe:
        baseline = _logits(model.module, data)
        top1 = topk_accuracy(logits=baseline, labels=data.labels, k=1) if data.labels is not None else None
        return cls(model=model, data=data, config=config, baseline=baseline, baseline_top1=top1,
                   fp16_total=float_param_count(model.module) * 2,
                   forward=PartialForward.build(copy.deepcopy(model.module).eval()))

    def layer(self, *, order: int, name: str, layer: nn.Module, progress: Progress, total_layers: int) -> list[dict]:
        """The rows of one layer: each setting compressed alone, then one partial forward for all of them."""
        settings = self.config.settings
        total = total_layers * len(settings)
        done = order * len(settings)
        probed: dict[str, nn.Module] = {}
        rows: dict[str, dict] = {}
        for index, setting_key in enumerate(settings):
            setting = SETTINGS[setting_key]
            progress.update((done + 0.2 * index / len(settings)) / total, f"Compressing {name} with {setting.label}")
            rows[setting_key], module = self._compress(order=order, name=name, layer=layer, setting=setting)
            if module is not None:
                probed[setting_key] = module
        outputs = self.forward.outputs(
            layer_name=name, replacements=probed, batches=[x for x, _ in self.data.batches],
            progress=progress.sub((done + 0.2 * len(settings)) / total, (done + len(settings)) / total),
            label=f"Evaluating {name} × {len(probed)} settings",
        )
        for setting_key, row in rows.items():
            row.update(self._output_numbers(outputs.get(setting_key)))
        return list(rows.values())

    def _compress(self, *, order: int, name: str, layer: nn.Module,
                  setting: ProbeSetting) -> tuple[dict, nn.Module | None]:
        """One probe's row (size and weight numbers) and its compressed layer (None when not compressed)."""
        params = int(layer.weight.numel())
        fp16_bytes = params * 2.0
        result = compress_one_layer(model=self.model, layer_name=name, setting=setting)
        report = result.layers[0]
        bits = sum(layer_storage_bits(report).values())
        row = {
            "layer": name, "order": order, "type": type(layer).__name__, "params": params,
            "setting": setting.key, "setting_label": setting.label, "method": setting.method,
            "compressed": bool(report.compressed), "reason": report.reason, "weight_snr_db": report.snr_db,
            "bits_per_weight": bits / params, "layer_bytes": bits / 8.0, "layer_bytes_fp16": fp16_bytes,
            "bytes_saved": fp16_bytes - bits / 8.0,
            "layer_share": fp16_bytes / self.fp16_total if self.fp16_total else math.nan,
        }
        if not report.compressed:
            return row, None
        samples = weight_arrays(result.weights, max_values=HISTOGRAM_VALUES, seed=self.config.seed)
        for array_key, values in samples.items():
            self.arrays[f"{name}|{setting.key}/{array_key.rpartition('/')[2]}"] = values
        return row, result.module.get_submodule(name)

    def _output_numbers(self, logits: torch.Tensor | None) -> dict:
        """Output SNR / PSNR, agreement and top-1 change of one probe against the baseline outputs."""
        labels = self.data.labels
        if logits is None:  # not compressed by this setting: the outputs are the baseline's
            return {"snr_db": math.inf, "psnr_db": math.inf, "agreement": 1.0,
                    "top1_change": 0.0 if labels is not None else math.nan}
        change = math.nan
        if labels is not None and self.baseline_top1 is not None:
            change = topk_accuracy(logits=logits, labels=labels, k=1) - self.baseline_top1
        return {"snr_db": snr_db(reference=self.baseline, candidate=logits),
                "psnr_db": output_psnr_db(reference=self.baseline, candidate=logits),
                "agreement": top1_agreement(reference_logits=self.baseline, candidate_logits=logits),
                "top1_change": change}


def _meta(*, key: str, model: LoadedModel, config: SensitivityConfig, data: _Slice, layers: dict, probe: _Probe,
          seconds: float) -> dict:
    """What a cached table was measured on (meta.json)."""
    return {
        "version": CACHE_VERSION,
        "key": key,
        "model": model.source_id,
        "model_label": model.label,
        "fingerprint": model_fingerprint(model),
        "settings": list(config.settings),
        "config": config.to_dict(),
        "data": data.description,
        "data_key": data.key,
        "eval_images": data.images,
        "has_labels": data.labels is not None,
        "baseline_top1": probe.baseline_top1,
        "float_params": float_param_count(model.module),
        "weight_params": int(sum(int(layer.weight.numel()) for layer in layers.values())),
        "fp16_bytes": probe.fp16_total,
        "seconds": seconds,
        "notes": data.notes,
    }


def parse_settings(text: str | None) -> tuple[str, ...]:
    """'pal2,pal4,int8' → ('pal2', 'pal4', 'int8'); the CLI's --settings."""
    if not text:
        return DEFAULT_SETTINGS
    keys = tuple(part.strip() for part in text.split(",") if part.strip())
    try:
        return SensitivityConfig(settings=keys).settings
    except SensitivityError as exc:
        raise SpecError(str(exc)) from None


def cached_results(*, cache_root: Path | None = None) -> list[SensitivityResult]:
    """Every cached sensitivity table, newest first."""
    root = sensitivity_root(cache_root)
    if not root.is_dir():
        return []
    folders = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    results = [load_cached(key=p.name, cache_root=cache_root) for p in folders]
    return [r for r in results if r is not None]
