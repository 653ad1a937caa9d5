"""Sweeps: many compression configs of one model, run as jobs, compared on one Pareto scatter.

A ``SweepGrid`` is a validated, frozen list of spec dicts: a preset (``PRESETS``), a custom grid built from
methods × ranges (``CustomGrid``), or JSON (``grid_from_json``). ``plan_sweep`` checks every config against the
model's layers (a layer a config cannot take is listed with the registry's reason; a config no layer can take is
skipped *and listed*, never silently) and estimates the time. ``start_sweep`` submits the runnable configs as jobs
tagged with the sweep id (``origin = {"kind": "sweep", "id": …}``); ``stop_sweep`` cancels what has not finished,
``resume_sweep`` resubmits every config without a finished experiment. Sweeps live in the store's SQLite file
(tables ``explore_sweeps`` and ``explore_sweep_jobs``), so any process can watch or stop them.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from core.compress.registry import sweepable_methods
from core.explore.books import StoreBook
from core.jobs.queue import CANCELLED, DONE, FAILED, QUEUED, RUNNING
from core.jobs.refs import DataRef, ModelRef
from core.specs import PalettizeSpec, SpecError, spec_from_dict, spec_type

if TYPE_CHECKING:
    from core.models.sources import LoadedModel

PALETTIZE_BITS = PalettizeSpec.allowed_values("n_bits")
SWEEP_KIND = "sweep"


class SweepError(ValueError):
    """A sweep grid or a sweep operation is invalid; the message names the field and what to do."""


# --------------------------------------------------------------------------- grids


def _validated(configs: Sequence[Any]) -> tuple[dict, ...]:
    """Spec dicts round-tripped through core.specs (defaults filled in), duplicates dropped, order kept."""
    out: list[dict] = []
    seen: set[str] = set()
    for index, config in enumerate(configs):
        try:
            spec = spec_from_dict(config)
        except SpecError as exc:
            raise SweepError(f"configs[{index}]: {exc}") from None
        data = spec.to_dict()
        key = json.dumps(data, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(data)
    return tuple(out)


@dataclass(frozen=True)
class SweepGrid:
    """A named list of compression configs (spec dicts, validated through core.specs)."""

    name: str
    configs: tuple[dict, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise SweepError("name: a sweep grid needs a name.")
        if not self.configs:
            raise SweepError("configs: the grid is empty — pick at least one method and one value per range.")
        object.__setattr__(self, "configs", _validated(self.configs))

    def __len__(self) -> int:
        return len(self.configs)

    def summaries(self) -> list[str]:
        return [spec_from_dict(c).summary() for c in self.configs]

    def to_dict(self) -> dict:
        return {"name": self.name, "configs": [dict(c) for c in self.configs]}

    @classmethod
    def from_dict(cls, data: dict) -> SweepGrid:
        if not isinstance(data, dict):
            raise SweepError(f"a sweep grid must be a mapping; got {type(data).__name__}.")
        unknown = sorted(set(data) - {"name", "configs"})
        if unknown:
            raise SweepError(f"sweep grid: unknown key(s) {', '.join(unknown)}; known: configs, name.")
        configs = data.get("configs")
        if not isinstance(configs, list):
            raise SweepError("configs: must be a list of spec mappings.")
        return cls(name=str(data.get("name") or "custom grid"), configs=tuple(configs))


def _guide_table() -> list[dict]:
    """coremltools' ResNet50 guide table: palettize 8/6/4/3 per tensor, 4-bit grouped 16/8/4, prune 50/75/90 %
    data-free, W8A8; plus PyTorch int8 static and dynamic."""
    configs: list[dict] = [{"method": "palettize", "n_bits": bits} for bits in (8, 6, 4, 3)]
    configs += [{"method": "palettize", "n_bits": 4, "granularity": "per_grouped_channel", "group_size": size}
                for size in (16, 8, 4)]
    configs += [{"method": "prune", "target_sparsity": sparsity} for sparsity in (0.5, 0.75, 0.9)]
    configs += [{"method": "quantize_activations"}, {"method": "torch_static"}, {"method": "torch_dynamic"}]
    return configs


def _weight_only() -> list[dict]:
    """The weight-only exploration list, from Apple's model-compression-exploration protocol, config for config:
    int8 and int4 × symmetric / asymmetric, per channel (4); int4 per block 16 / 32 / 128 × symmetric / asymmetric
    (6: the mode axis applies to blocks too, and asymmetric blocks are where int4 differs most); palettize 8/6/4/3/2
    bits × per tensor / grouped 16 / per-channel scale (15). 25 configs."""
    configs = [{"method": "quantize_weights", "dtype": dtype, "mode": mode}
               for dtype, mode in itertools.product(("int8", "int4"), ("symmetric", "asymmetric"))]
    configs += [{"method": "quantize_weights", "dtype": "int4", "mode": mode, "granularity": "per_block",
                 "block_size": size}
                for size, mode in itertools.product((16, 32, 128), ("symmetric", "asymmetric"))]
    for bits in (8, 6, 4, 3, 2):
        configs += [
            {"method": "palettize", "n_bits": bits},
            {"method": "palettize", "n_bits": bits, "granularity": "per_grouped_channel", "group_size": 16},
            {"method": "palettize", "n_bits": bits, "enable_per_channel_scale": True},
        ]
    return configs


def _int8_granularity() -> list[dict]:
    """int8 with one weight scale per channel vs one per tensor, in both W8A8 (coremltools) and PyTorch static int8,
    plus weight-only int8 per channel for reference. Meant for depthwise-conv models such as sample:fashion_mobilenet,
    whose folded depthwise channel ranges are far apart, so one scale per tensor costs accuracy that one per channel
    does not (its measured numbers: bench.granularity_lesson, recorded in sample_models/manifest.json)."""
    return [
        {"method": "quantize_activations"},
        {"method": "quantize_activations", "weight_per_channel": False},
        {"method": "torch_static", "per_channel": True},
        {"method": "torch_static", "per_channel": False},
        {"method": "quantize_weights", "dtype": "int8"},
    ]


PRESETS: dict[str, str] = {
    "coremltools ResNet50 guide table": "palettize 8/6/4/3-bit, 4-bit grouped 16/8/4, prune 50/75/90 %, W8A8, "
    "PyTorch int8 static and dynamic (13 configs)",
    "weight-only exploration": "int8/int4 × symmetric/asymmetric per channel (4), int4 per block 16/32/128 × "
    "symmetric/asymmetric (6), palettize 8/6/4/3/2-bit × per tensor / grouped 16 / per-channel scale (15): 25 configs",
    "int8 weight scales: per channel vs per tensor": "W8A8 and PyTorch static int8, each with per-channel and with "
    "per-tensor weight scales, and int8 weights per channel (5 configs). For depthwise-conv models such as "
    "sample:fashion_mobilenet, whose per-channel ranges one per-tensor scale must cover",
}
_PRESET_BUILDERS = {"coremltools ResNet50 guide table": _guide_table, "weight-only exploration": _weight_only,
                    "int8 weight scales: per channel vs per tensor": _int8_granularity}
PRESET_ALIASES = {"guide": "coremltools ResNet50 guide table", "weight-only": "weight-only exploration",
                  "int8-granularity": "int8 weight scales: per channel vs per tensor"}


def preset_grid(*, name: str) -> SweepGrid:
    """A preset by its name (or alias 'guide' / 'weight-only')."""
    key = PRESET_ALIASES.get(name, name)
    if key not in _PRESET_BUILDERS:
        known = ", ".join([*PRESETS, *PRESET_ALIASES])
        raise SweepError(f"preset: unknown preset {name!r}; choose one of {known}.")
    return SweepGrid(name=key, configs=tuple(_PRESET_BUILDERS[key]()))


# The methods whose specs declare sweep values on a knob; palettize, quantize_weights and prune have named ranges
# below (the page's widgets), any other such method is swept over `axes` or its knobs' declared sweep values.
CUSTOM_METHODS = sweepable_methods()
_NAMED_RANGES = ("palettize", "quantize_weights", "prune")


@dataclass(frozen=True)
class CustomGrid:
    """Methods × ranges, as the page's multiselects and sliders give them; ``grid()`` expands it."""

    methods: tuple[str, ...] = ("palettize",)
    palettize_bits: tuple[int, ...] = (4,)
    palettize_group_sizes: tuple[int, ...] = ()  # grouped-channel palettization; () = per tensor only
    quantize_dtypes: tuple[str, ...] = ("int8",)
    quantize_modes: tuple[str, ...] = ("symmetric",)
    quantize_block_sizes: tuple[int, ...] = ()  # per-block int4/int8; () = per channel only
    prune_sparsities: tuple[float, ...] = (0.5,)
    # other methods: method → {field: values}; a method left out varies its knobs' declared sweep values
    axes: dict[str, dict[str, tuple]] = field(default_factory=dict)
    name: str = "custom grid"

    def __post_init__(self) -> None:
        for name in ("methods", "palettize_bits", "palettize_group_sizes", "quantize_dtypes", "quantize_modes",
                     "quantize_block_sizes", "prune_sparsities"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise SweepError(f"{name}: must be a list; got {value!r}.")
            object.__setattr__(self, name, tuple(value))
        if not self.methods:
            raise SweepError("methods: the grid is empty — pick at least one method.")
        unknown = [m for m in self.methods if m not in CUSTOM_METHODS]
        if unknown:
            raise SweepError(f"methods: {unknown[0]!r} cannot be swept here; choose from {', '.join(CUSTOM_METHODS)}.")
        if "palettize" in self.methods:
            if not self.palettize_bits:
                raise SweepError("palettize_bits: pick at least one bit width for palettize.")
            bad = [b for b in self.palettize_bits if b not in PALETTIZE_BITS]
            if bad:
                raise SweepError(f"palettize_bits: {bad[0]} bits is not a palettization width; "
                                 f"choose from {', '.join(map(str, PALETTIZE_BITS))}.")
            _positive("palettize_group_sizes", self.palettize_group_sizes, what="group size")
        if "quantize_weights" in self.methods:
            if not self.quantize_dtypes or not self.quantize_modes:
                raise SweepError("quantize_dtypes: pick at least one dtype and one mode for quantize_weights.")
            _positive("quantize_block_sizes", self.quantize_block_sizes, what="block size")
        if "prune" in self.methods:
            if not self.prune_sparsities:
                raise SweepError("prune_sparsities: pick at least one target sparsity for prune.")
            bad_sparsity = [s for s in self.prune_sparsities if not 0.0 <= float(s) < 1.0]
            if bad_sparsity:
                raise SweepError(f"prune_sparsities: {bad_sparsity[0]} is not a sparsity in [0, 1).")
        for method, axes in self.axes.items():
            if method not in self.methods or method in _NAMED_RANGES:
                raise SweepError(f"axes: {method!r} is not one of this grid's other methods "
                                 f"({', '.join(m for m in self.methods if m not in _NAMED_RANGES) or 'none'}).")
            unknown = sorted(set(axes) - set(spec_type(method).knobs()))
            if unknown:
                raise SweepError(f"axes: {method} has no knob {unknown[0]!r}.")

    def configs(self) -> list[dict]:
        configs: list[dict] = []
        if "palettize" in self.methods:
            for bits in self.palettize_bits:
                configs.append({"method": "palettize", "n_bits": int(bits)})
                configs += [{"method": "palettize", "n_bits": int(bits), "granularity": "per_grouped_channel",
                             "group_size": int(size)} for size in self.palettize_group_sizes]
        if "quantize_weights" in self.methods:
            for dtype, mode in itertools.product(self.quantize_dtypes, self.quantize_modes):
                configs.append({"method": "quantize_weights", "dtype": dtype, "mode": mode})
                configs += [{"method": "quantize_weights", "dtype": dtype, "mode": mode, "granularity": "per_block",
                             "block_size": int(size)} for size in self.quantize_block_sizes]
        if "prune" in self.methods:
            configs += [{"method": "prune", "target_sparsity": float(s)} for s in self.prune_sparsities]
        for method in (m for m in self.methods if m not in _NAMED_RANGES):
            axes = self.axes.get(method) or spec_type(method).sweep_axes()
            names = list(axes)
            configs += [{"method": method, **dict(zip(names, values, strict=True))}
                        for values in itertools.product(*(tuple(axes[n]) for n in names))]
        return configs

    def grid(self) -> SweepGrid:
        return SweepGrid(name=self.name, configs=tuple(self.configs()))


def _positive(name: str, values: Sequence[int], *, what: str) -> None:
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SweepError(f"{name}: a {what} must be a whole number ≥ 1; got {value!r}.")


def grid_from_json(*, text: str) -> SweepGrid:
    """A grid from JSON: a list of specs, {"name", "configs"}, or a custom grid's fields ({"methods": …})."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SweepError(f"grid: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}).") from None
    if isinstance(data, list):
        return SweepGrid(name="custom grid", configs=tuple(data))
    if isinstance(data, dict) and "methods" in data:
        known = set(CustomGrid.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise SweepError(f"grid: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
        return CustomGrid(**data).grid()
    if isinstance(data, dict):
        return SweepGrid.from_dict(data)
    raise SweepError("grid: expected a list of specs or a mapping with 'configs' or 'methods'.")


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep will do on one model: the configs it runs, those it skips (with why), and the time."""

    grid: SweepGrid
    runnable: tuple[int, ...]  # indexes into grid.configs
    skipped: tuple[dict, ...]  # {"config", "summary", "reason"}
    layer_exceptions: pd.DataFrame = field(compare=False)  # config × layer that stays uncompressed, with the reason
    estimated_seconds: float = 0.0  # one worker, all runnable configs
    workers: int = 1
    basis: str = ""

    @property
    def wall_seconds(self) -> float:
        """Estimated wall time with the workers running in parallel."""
        return self.estimated_seconds / max(1, min(self.workers, len(self.runnable) or 1))


LAYER_EXCEPTION_COLUMNS = ("config", "summary", "layer", "shape", "reason", "limit")


def _is_generic(reason: str) -> bool:
    """Reasons every config shares (too few weights, an op the library skips): not a limit of this config."""
    return reason.startswith(("below weight_threshold", "unsupported op", "overridden"))


def layer_exceptions(*, module: Any, grid: SweepGrid) -> pd.DataFrame:
    """Every config × layer the registry's eligibility leaves uncompressed, with its reason.

    ``limit`` is True when the reason is specific to the config (group size not dividing the channels, block size
    too large …), False for reasons every config shares (below the weight threshold, an unsupported op).
    """
    from core.compress.layers import plan_layers
    from core.compress.registry import descriptor_for

    rows = []
    for index, config in enumerate(grid.configs):
        spec = spec_from_dict(config)
        if not hasattr(spec, "resolve"):  # a pipeline: its steps are checked when it runs
            continue
        plans = plan_layers(module, spec, descriptor_for(spec).eligibility(spec))
        for name, plan in plans.items():
            if plan.reason:
                rows.append({"config": index, "summary": spec.summary(), "layer": name,
                             "shape": "×".join(map(str, plan.shape)), "reason": plan.reason,
                             "limit": not _is_generic(plan.reason)})
    return pd.DataFrame(rows, columns=list(LAYER_EXCEPTION_COLUMNS))


def plan_sweep(
    *, model: LoadedModel, grid: SweepGrid, eval_images: int, history: Sequence[dict] = (),
    baseline: dict | None = None, workers: int = 1,
) -> SweepPlan:
    """Check the grid against the model's layers and estimate the time (core.estimate) before anything runs."""
    from core.compress.layers import weight_layers
    from core.estimate import estimate_seconds, forward_ms_per_image

    exceptions = layer_exceptions(module=model.module, grid=grid)
    layer_count = len(weight_layers(model.module))
    runnable, skipped = [], []
    for index, config in enumerate(grid.configs):
        rows = exceptions[exceptions["config"] == index]
        if layer_count and len(rows) >= layer_count:
            reasons = "; ".join(f"{r.layer}: {r.reason}" for r in rows.head(3).itertuples())
            more = f" (+{len(rows) - 3} more)" if len(rows) > 3 else ""
            skipped.append({"config": index, "summary": spec_from_dict(config).summary(),
                            "reason": f"no layer can take it — {reasons}{more}"})
        else:
            runnable.append(index)
    forward = forward_ms_per_image(baseline) if baseline else None
    total, bases = 0.0, set()
    for index in runnable:
        seconds, basis = estimate_seconds(params=model.params, spec=spec_from_dict(grid.configs[index]),
                                          eval_images=eval_images, history=history, forward_ms_per_image=forward)
        total += seconds
        bases.add(basis.split(":")[0])
    return SweepPlan(grid=grid, runnable=tuple(runnable), skipped=tuple(skipped), layer_exceptions=exceptions,
                     estimated_seconds=total, workers=max(1, int(workers)), basis="; ".join(sorted(bases)))


# --------------------------------------------------------------------------- the sweep book (SQLite)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS explore_sweeps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created_at REAL NOT NULL,
    model_ref TEXT NOT NULL,
    data_ref TEXT NOT NULL,
    options TEXT NOT NULL,
    configs TEXT NOT NULL,
    skipped TEXT NOT NULL,
    stopped INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS explore_sweep_jobs (
    sweep_id INTEGER NOT NULL,
    config INTEGER NOT NULL,
    job_id INTEGER NOT NULL,
    PRIMARY KEY (sweep_id, job_id)
);
"""


@dataclass(frozen=True)
class Sweep:
    """One stored sweep: what it runs and which jobs ran each config (latest last)."""

    id: int
    name: str
    created_at: float
    model_ref: ModelRef
    data_ref: DataRef
    options: dict
    configs: tuple[dict, ...]
    skipped: tuple[dict, ...]
    stopped: bool
    jobs: dict[int, tuple[int, ...]]  # config index → job ids, oldest first

    @property
    def origin(self) -> dict:
        return {"kind": SWEEP_KIND, "id": self.id, "parent_experiment_id": None, "label": f"sweep #{self.id}: {self.name}"}


class SweepBook(StoreBook):
    """Sweeps of the data folder `home`, in the store's SQLite file next to the job queue."""

    SCHEMA = _SCHEMA

    def create(self, *, name: str, model: ModelRef, data: DataRef, options: dict, configs: Sequence[dict],
               skipped: Sequence[dict] = ()) -> int:
        with self._connection() as conn:
            cursor = conn.execute(
                "INSERT INTO explore_sweeps (name, created_at, model_ref, data_ref, options, configs, skipped)"
                " VALUES (?,?,?,?,?,?,?)",
                (name, time.time(), json.dumps(model.to_dict()), json.dumps(data.to_dict()), json.dumps(options),
                 json.dumps(list(configs)), json.dumps(list(skipped))),
            )
            return int(cursor.lastrowid)

    def add_job(self, *, sweep_id: int, config: int, job_id: int) -> None:
        with self._connection() as conn:
            conn.execute("INSERT INTO explore_sweep_jobs (sweep_id, config, job_id) VALUES (?,?,?)",
                         (int(sweep_id), int(config), int(job_id)))

    def set_stopped(self, *, sweep_id: int, stopped: bool) -> None:
        with self._connection() as conn:
            conn.execute("UPDATE explore_sweeps SET stopped=? WHERE id=?", (int(stopped), int(sweep_id)))

    def get(self, *, sweep_id: int) -> Sweep:
        with self._connection() as conn:
            row = conn.execute("SELECT id, name, created_at, model_ref, data_ref, options, configs, skipped, stopped"
                               " FROM explore_sweeps WHERE id=?", (int(sweep_id),)).fetchone()
            if row is None:
                raise SweepError(f"sweep #{sweep_id} does not exist.")
            links = conn.execute("SELECT config, job_id FROM explore_sweep_jobs WHERE sweep_id=? ORDER BY job_id",
                                 (int(sweep_id),)).fetchall()
        jobs: dict[int, list[int]] = {}
        for config, job_id in links:
            jobs.setdefault(int(config), []).append(int(job_id))
        return Sweep(
            id=int(row[0]), name=row[1], created_at=float(row[2]), model_ref=ModelRef.from_dict(json.loads(row[3])),
            data_ref=DataRef.from_dict(json.loads(row[4])), options=json.loads(row[5]),
            configs=tuple(json.loads(row[6])), skipped=tuple(json.loads(row[7])), stopped=bool(row[8]),
            jobs={k: tuple(v) for k, v in jobs.items()},
        )

    def list(self, *, model: str | None = None) -> list[Sweep]:
        """Sweeps, newest first (of one model source id when given)."""
        with self._connection() as conn:
            ids = [int(r[0]) for r in conn.execute("SELECT id FROM explore_sweeps ORDER BY id DESC").fetchall()]
        sweeps = [self.get(sweep_id=i) for i in ids]
        return [s for s in sweeps if model is None or s.model_ref.source_id == model]


# --------------------------------------------------------------------------- running


def start_sweep(
    *, executor: Any, model: ModelRef, data: DataRef, plan: SweepPlan, options: dict | None = None,
    book: SweepBook | None = None,
) -> int:
    """Record the sweep and submit each runnable config as a job tagged with the sweep id; returns the sweep id."""
    if not plan.runnable:
        raise SweepError("configs: no config of this grid can run on this model (see the skipped list).")
    book = book or SweepBook(home=executor.queue.home)
    # every config is also measured on a training-pool slice, so that a winner picked among them (a search reusing
    # them, "best within budget") is chosen there and only confirmed on the test images
    options = {"validation_images": SELECTION_IMAGES, **(options or {})}
    sweep_id = book.create(name=plan.grid.name, model=model, data=data, options=options,
                           configs=plan.grid.configs, skipped=plan.skipped)
    sweep = book.get(sweep_id=sweep_id)
    for index in plan.runnable:
        _submit_config(executor=executor, book=book, sweep=sweep, index=index)
    return sweep_id


def _submit_config(*, executor: Any, book: SweepBook, sweep: Sweep, index: int) -> int:
    spec = sweep.configs[index]
    job_id = executor.submit(model=sweep.model_ref, data=sweep.data_ref, spec=spec, options=sweep.options,
                             label=f"sweep #{sweep.id} · {spec_from_dict(spec).summary()}", origin=sweep.origin)
    book.add_job(sweep_id=sweep.id, config=index, job_id=job_id)
    return job_id


def stop_sweep(*, sweep_id: int, book: SweepBook) -> int:
    """Cancel every queued or running job of the sweep; returns how many were asked to stop."""
    sweep = book.get(sweep_id=sweep_id)
    book.set_stopped(sweep_id=sweep_id, stopped=True)
    stopped = 0
    for job_ids in sweep.jobs.values():
        job = book.queue.get(job_id=job_ids[-1])
        if job.state in (QUEUED, RUNNING):
            book.queue.cancel(job_id=job.id)
            stopped += 1
    return stopped


def resume_sweep(*, sweep_id: int, executor: Any, book: SweepBook | None = None) -> list[int]:
    """Resubmit every runnable config whose latest job did not finish with an experiment; returns the new job ids."""
    book = book or SweepBook(home=executor.queue.home)
    sweep = book.get(sweep_id=sweep_id)
    book.set_stopped(sweep_id=sweep_id, stopped=False)
    skipped = {s["config"] for s in sweep.skipped}
    new_jobs = []
    for index in range(len(sweep.configs)):
        if index in skipped:
            continue
        job_ids = sweep.jobs.get(index)
        if job_ids and book.queue.get(job_id=job_ids[-1]).state in (QUEUED, RUNNING, DONE):
            continue
        new_jobs.append(_submit_config(executor=executor, book=book, sweep=sweep, index=index))
    return new_jobs


SELECTION_IMAGES = 2000  # training-pool images (never test images) a winner among sweep / search results is chosen on

RESULT_COLUMNS = (
    "config", "spec_summary", "method", "state", "progress", "message", "job_id", "experiment_id", "accuracy_top1",
    "baseline_accuracy_top1", "accuracy_delta_pts", "validation_delta_pts", "validation_images", "agreement_top1", "output_snr_db", "size_bytes",
    "compression_ratio_fp16", "bits_per_weight", "latency_ms_p50", "latency_ratio", "accuracy_meaningful", "size_source", "error",
)


def sweep_results_frame(*, sweep_id: int, book: SweepBook, records: Sequence[dict] | None = None) -> pd.DataFrame:
    """One row per config: its job's state and progress, and (once done) its experiment's numbers.

    `records` are the model's experiment records (read from the store when not given); a skipped config shows
    state 'skipped' with its reason in ``error``.
    """
    sweep = book.get(sweep_id=sweep_id)
    if records is None:
        from core.store import ExperimentStore

        records = ExperimentStore(book.home).list(model=sweep.model_ref.source_id)
    by_id = {r["id"]: r for r in records}
    skipped = {s["config"]: s["reason"] for s in sweep.skipped}
    rows = []
    for index, config in enumerate(sweep.configs):
        row: dict[str, Any] = {"config": index, "spec_summary": spec_from_dict(config).summary(),
                               "method": config.get("method", "pipeline")}
        job_ids = sweep.jobs.get(index)
        if index in skipped:
            row.update(state="skipped", progress=0.0, message="", error=skipped[index])
        elif not job_ids:
            row.update(state="not submitted", progress=0.0, message="")
        else:
            job = book.queue.get(job_id=job_ids[-1])
            row.update(state=job.state, progress=job.progress, message=job.message, job_id=job.id,
                       experiment_id=job.experiment_id, error=job.error)
            record = by_id.get(job.experiment_id) if job.experiment_id is not None else None
            if record is not None:
                for key in ("accuracy_top1", "baseline_accuracy_top1", "agreement_top1", "output_snr_db",
                            "size_bytes", "compression_ratio_fp16", "bits_per_weight", "latency_ms_p50",
                            "latency_ratio", "accuracy_meaningful"):
                    row[key] = record.get(key)
                # Without an exported artifact (export off) the size is the per-layer theoretical one, and says so.
                row["size_source"] = "artifact" if record.get("size_bytes") else "theoretical"
                if not record.get("size_bytes"):
                    row["size_bytes"] = record.get("theoretical_size_bytes")
                acc, base = record.get("accuracy_top1"), record.get("baseline_accuracy_top1")
                row["accuracy_delta_pts"] = (acc - base) * 100 if acc is not None and base is not None else None
                val, val_base = record.get("validation_accuracy_top1"), record.get("baseline_validation_accuracy_top1")
                row["validation_delta_pts"] = (val - val_base) * 100 if val is not None and val_base is not None else None
                row["validation_images"] = record.get("validation_images")
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    for column in ("progress", "accuracy_top1", "baseline_accuracy_top1", "accuracy_delta_pts", "validation_delta_pts",
                   "validation_images", "agreement_top1",
                   "output_snr_db", "size_bytes", "compression_ratio_fp16", "bits_per_weight", "latency_ms_p50",
                   "latency_ratio", "experiment_id", "job_id"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


@dataclass(frozen=True)
class SweepStatus:
    """Counts of a sweep's configs by state; `finished` once nothing is queued or running."""

    total: int
    done: int
    failed: int
    cancelled: int
    running: int
    queued: int
    skipped: int

    @property
    def finished(self) -> bool:
        return self.running == 0 and self.queued == 0

    @property
    def fraction(self) -> float:
        runnable = self.total - self.skipped
        return (self.done + self.failed + self.cancelled) / runnable if runnable else 1.0


def sweep_status(frame: pd.DataFrame) -> SweepStatus:
    """Counts from a results frame (sweep_results_frame)."""
    states = frame["state"].value_counts().to_dict() if len(frame) else {}
    return SweepStatus(total=len(frame), done=states.get(DONE, 0), failed=states.get(FAILED, 0),
                       cancelled=states.get(CANCELLED, 0), running=states.get(RUNNING, 0),
                       queued=states.get(QUEUED, 0) + states.get("not submitted", 0), skipped=states.get("skipped", 0))


def wait_for_sweep(*, sweep_id: int, book: SweepBook, timeout: float = 3600.0, poll: float = 0.5,
                   on_update: Any = None, executor: Any = None) -> pd.DataFrame:
    """Block until no config of the sweep is queued or running; `on_update(frame)` is called on every poll.

    With a local `executor`, workers that idled out or died meanwhile are restarted on every poll."""
    deadline = time.monotonic() + timeout
    while True:
        keep_workers(executor)
        frame = sweep_results_frame(sweep_id=sweep_id, book=book, records=[])
        if on_update is not None:
            on_update(frame)
        if sweep_status(frame).finished or time.monotonic() > deadline:
            return sweep_results_frame(sweep_id=sweep_id, book=book)
        time.sleep(poll)


def keep_workers(executor: Any) -> None:
    """Restart local workers for queued jobs (a no-op for Ray and without an executor)."""
    ensure = getattr(executor, "ensure_workers", None)
    if ensure is not None:
        ensure()


# --------------------------------------------------------------------------- Pareto


def pareto_mask(frame: pd.DataFrame, *, x: str, y: str) -> pd.Series:
    """True for rows on the Pareto front: no other row has smaller-or-equal `x` and higher-or-equal `y`
    (one strictly). Rows missing either value are False."""
    mask = pd.Series(False, index=frame.index)
    data = frame[[x, y]].apply(pd.to_numeric, errors="coerce").dropna()
    ordered = data.sort_values([x, y], ascending=[True, False])
    best = -float("inf")
    for index, value in zip(ordered.index, ordered[y], strict=True):
        if value > best:
            mask[index] = True
            best = value
    return mask
