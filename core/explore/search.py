"""Accuracy-budget search: "the smallest (or fastest) model within X points of the baseline".

``pick_winner`` answers from experiments already in the store (sweeps, recipes, manual runs). ``run_search``
runs what it needs first: the configs of a grid (default: the weight-only exploration preset) that the model has
no experiment for yet, the mixed-precision candidates of ``core.explore.mixed_precision`` when that module offers
``search_candidates``, and a layer-skip refinement (Apple's exploration protocol): the most promising setting that
broke the budget is rerun with its most sensitive layers kept at the best in-budget setting of the same method.
Every run is a job whose experiment carries ``origin = {"kind": "search", …}``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from core.explore.sweeps import keep_workers, preset_grid
from core.formatting import as_number, fmt_num
from core.jobs.refs import DataRef, ModelRef
from core.specs import SpecError, spec_from_dict

OBJECTIVES = {"size": ("size_bytes", "smallest"), "latency": ("latency_ms_p50", "fastest")}
REFINE_LAYER_COUNTS = (1, 2, 4)  # how many sensitive layers a refinement run keeps at the safer setting
REFINE_ROUNDS = 2  # a refinement that becomes the winner can itself be beaten by refining a smaller setting


class SearchError(ValueError):
    """The search cannot run as asked; the message names the field."""


@dataclass(frozen=True)
class SearchGoal:
    """Within `max_drop_pts` accuracy points of the baseline, minimise size or latency."""

    max_drop_pts: float = 1.0
    objective: str = "size"
    refine: bool = True  # run layer-skip refinements of the best setting that broke the budget

    def __post_init__(self) -> None:
        drop = as_number(self.max_drop_pts)
        if drop is None or isinstance(self.max_drop_pts, bool) or not 0.0 <= drop <= 100.0:
            raise SearchError(f"max_drop_pts must be a number of points in [0, 100]; got {self.max_drop_pts!r}.")
        if self.objective not in OBJECTIVES:
            raise SearchError(f"objective must be one of {', '.join(OBJECTIVES)}; got {self.objective!r}.")

    @property
    def column(self) -> str:
        return OBJECTIVES[self.objective][0]


CANDIDATE_COLUMNS = ("id", "spec_summary", "method", "origin", "accuracy_top1", "baseline_accuracy_top1", "drop_pts",
                     "size_bytes", "compression_ratio_fp16", "latency_ms_p50", "latency_ratio", "within_budget")


def config_label(record: dict) -> str:
    """The spec summary, saying when layers have their own settings (a recipe or a refinement)."""
    summary = str(record.get("spec_summary") or record.get("method"))
    overrides = (record.get("spec") or {}).get("overrides") or {}
    return f"{summary} + {len(overrides)} per-layer override(s)" if overrides else summary


def _drop_pts(record: dict) -> float | None:
    """Points lost against the baseline on the same images (top-1 agreement when accuracy is meaningless)."""
    acc, base = as_number(record.get("accuracy_top1")), as_number(record.get("baseline_accuracy_top1"))
    if acc is not None and base is not None:
        return (base - acc) * 100
    agreement = as_number(record.get("agreement_top1"))
    return (1 - agreement) * 100 if agreement is not None else None


def _size(record: dict) -> float | None:
    """The artifact's bytes on disk; without an exported artifact, the per-layer theoretical bytes."""
    return as_number(record.get("size_bytes")) or as_number(record.get("theoretical_size_bytes"))


def candidates_frame(records: Sequence[dict], *, goal: SearchGoal) -> pd.DataFrame:
    """Every experiment with its drop and whether it is within the budget, best objective first."""
    rows = []
    for record in records:
        if record.get("kind", "experiment") != "experiment":
            continue
        drop = _drop_pts(record)
        origin = (record.get("origin") or {}).get("kind") or "manual"
        rows.append({
            "id": record.get("id"), "spec_summary": config_label(record), "method": record.get("method"),
            "origin": origin, "accuracy_top1": record.get("accuracy_top1"),
            "baseline_accuracy_top1": record.get("baseline_accuracy_top1"), "drop_pts": drop,
            "size_bytes": _size(record), "compression_ratio_fp16": record.get("compression_ratio_fp16"),
            "latency_ms_p50": record.get("latency_ms_p50"), "latency_ratio": record.get("latency_ratio"),
            "within_budget": drop is not None and drop <= goal.max_drop_pts + 1e-9,
        })
    frame = pd.DataFrame(rows, columns=list(CANDIDATE_COLUMNS))
    for column in ("accuracy_top1", "baseline_accuracy_top1", "drop_pts", "size_bytes", "compression_ratio_fp16",
                   "latency_ms_p50", "latency_ratio"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["within_budget"] = frame["within_budget"].astype(bool)
    return frame.sort_values([goal.column, "drop_pts"], na_position="last").reset_index(drop=True)


def stakeholder_sentence(record: dict, *, objective: str = "size") -> str:
    """'4.1× smaller, −0.4 points' (or '1.8× faster, …'): what a stakeholder needs to hear."""
    drop = _drop_pts(record)
    points = "accuracy not measured" if drop is None else f"{fmt_num(-drop, '+.1f')} points".replace("-", "−")
    if abs(drop or 0.0) < 0.05 and drop is not None:
        points = "no accuracy lost (±0.0 points)"
    if objective == "latency":
        ratio = as_number(record.get("latency_ratio"))
        speed = "latency not measured" if ratio is None else (
            f"{fmt_num(1 / ratio, '.1f', '×')} faster" if ratio <= 1 else f"{fmt_num(ratio, '.1f', '×')} slower")
        return f"{speed}, {points}"
    ratio = as_number(record.get("compression_ratio_fp16"))
    if ratio is None:  # no exported artifact: the theoretical size against the fp32 weights, said as such
        fp32, size = as_number(record.get("size_fp32_bytes")), _size(record)
        if fp32 and size:
            return f"{fmt_num(fp32 / size, '.1f', '×')} smaller than fp32 (theoretical size), {points}"
    return f"{fmt_num(ratio, '.1f', '×')} smaller, {points}"


@dataclass(frozen=True)
class SearchResult:
    """The winner (None when nothing is within the budget), every candidate, and what the search ran."""

    goal: SearchGoal
    winner: dict | None
    candidates: pd.DataFrame = field(compare=False)
    ran_experiments: tuple[int, ...] = ()
    failed_jobs: tuple[str, ...] = ()

    @property
    def sentence(self) -> str:
        if self.winner is None:
            return f"Nothing is within {self.goal.max_drop_pts:g} points of the baseline yet."
        verb = OBJECTIVES[self.goal.objective][1]
        return (f"#{self.winner['id']} {config_label(self.winner)}: {verb} within {self.goal.max_drop_pts:g} "
                f"points — {stakeholder_sentence(self.winner, objective=self.goal.objective)}.")


def pick_winner(records: Sequence[dict], *, goal: SearchGoal, ran: Sequence[int] = (),
                failed: Sequence[str] = ()) -> SearchResult:
    """The best experiment within the budget among `records` (one model's experiments)."""
    frame = candidates_frame(records, goal=goal)
    within = frame[frame["within_budget"] & frame[goal.column].notna()]
    winner = None
    if len(within):
        best_id = int(within.iloc[0]["id"])
        winner = next(r for r in records if r.get("id") == best_id)
    return SearchResult(goal=goal, winner=winner, candidates=frame, ran_experiments=tuple(ran),
                        failed_jobs=tuple(failed))


# --------------------------------------------------------------------------- what to run


def _key(spec: dict) -> str:
    import json

    return json.dumps(spec_from_dict(spec).to_dict(), sort_keys=True)


def missing_configs(*, configs: Sequence[dict], records: Sequence[dict]) -> list[dict]:
    """Configs of the grid the model has no experiment for yet (compared as normalised specs)."""
    have = set()
    for record in records:
        with_spec = record.get("spec")
        if with_spec:
            try:
                have.add(_key(with_spec))
            except SpecError:
                continue
    return [c for c in configs if _key(c) not in have]


def _layer_pattern(name: str) -> str:
    return f"^{re.escape(name)}$"


def refinement_specs(records: Sequence[dict], *, goal: SearchGoal,
                     layer_counts: Sequence[int] = REFINE_LAYER_COUNTS, max_bases: int = 2) -> list[dict]:
    """Layer-skip refinements of the settings that broke the budget but beat the current winner, closest to the
    budget first (at most `max_bases` of them).

    The layers with the lowest weight SNR (weighted towards small layers, which cost few bytes to keep) are
    overridden with the in-budget setting of the same method that is best on the objective, or left uncompressed
    when the method has none in budget.
    """
    frame = candidates_frame(records, goal=goal)
    within = frame[frame["within_budget"] & frame[goal.column].notna()]
    bound = float(within.iloc[0][goal.column]) if len(within) else math.inf
    by_id = {r["id"]: r for r in records}
    aggressive = frame[~frame["within_budget"] & (frame[goal.column] < bound)
                       & frame["method"].isin(["palettize", "quantize_weights", "prune"])].sort_values("drop_pts")
    found: list[dict] = []
    bases = 0
    for row in aggressive.itertuples():
        if bases >= max_bases:
            break
        record = by_id[int(row.id)]
        spec = dict(record.get("spec") or {})
        if spec.get("overrides"):
            continue  # already a refinement
        safe = within[within["method"] == row.method]
        partial: dict | None = None
        if len(safe):
            safe_spec = spec_from_dict(by_id[int(safe.iloc[0]["id"])]["spec"])
            partial = {name: getattr(safe_spec, name) for name in safe_spec.layer_fields()}
            partial = {k: list(v) if isinstance(v, tuple) else v for k, v in partial.items()}
        layers = [layer for layer in record.get("layers") or [] if layer.get("compressed")]
        if len(layers) < 2:
            continue
        smallest = min(max(1, int(layer.get("params") or 1)) for layer in layers)

        def score(layer: dict, smallest: int = smallest) -> float:
            snr = as_number(layer.get("snr_db"))
            return (snr if snr is not None else 99.0) + 2.0 * math.log2(max(1, int(layer.get("params") or 1)) / smallest)

        ranked = [layer["name"] for layer in sorted(layers, key=score)]
        out = []
        for count in layer_counts:
            if count >= len(ranked):
                break
            overrides = {_layer_pattern(name): partial for name in ranked[:count]}
            candidate = {**spec, "overrides": overrides}
            try:
                out.append(spec_from_dict(candidate).to_dict())
            except SpecError:
                continue
        if out:
            found += out
            bases += 1
    return found


def mixed_precision_specs(*, model: ModelRef, data: DataRef, goal: SearchGoal, records: Sequence[dict],
                          home: Any) -> list[dict]:
    """Mixed-precision candidates around the recipe that meets the budget, when the model has sensitivity data.

    Asks ``core.explore.mixed_precision.search_candidates`` when that module offers it; otherwise reads the cached
    sensitivity table of the default probe settings (core.explore.sensitivity) and takes the greedy recipe predicted
    to stay within the budget plus its two neighbours on each side (the prediction is a fit, the runs measure).
    Without the modules or the data the search goes on without (an empty list).
    """
    try:
        from core.explore import mixed_precision
    except ImportError:
        return []
    provider = getattr(mixed_precision, "search_candidates", None)
    try:
        if provider is not None:
            specs = provider(model_source_id=model.source_id, max_drop_pts=goal.max_drop_pts,
                             objective=goal.objective, records=list(records), home=home)
        else:
            specs = _cached_recipe_specs(mixed_precision=mixed_precision, model=model, data=data, goal=goal,
                                         home=home)
        return [spec_from_dict(s).to_dict() for s in specs or []]
    except (ImportError, AttributeError, TypeError, KeyError, ValueError, OSError):
        return []  # no sensitivity data for this model (or an older recipe module): the search goes on without


def _cached_recipe_specs(*, mixed_precision: Any, model: ModelRef, data: DataRef, goal: SearchGoal,
                         home: Any) -> list[dict]:
    from pathlib import Path

    from core.explore.sensitivity import SensitivityConfig, cache_key, load_cached
    from core.jobs.refs import load_data_ref, load_model_ref
    from core.paths import cache_dir

    loaded = load_model_ref(ref=model)
    dataset = load_data_ref(ref=data, model=loaded)
    result = load_cached(key=cache_key(model=loaded, dataset=dataset, config=SensitivityConfig()),
                         cache_root=cache_dir(Path(home)))
    if result is None or not result.has_labels:
        return []
    candidates = mixed_precision.mixed_precision_candidates(sensitivity=result)
    chosen = mixed_precision.choose(candidates=candidates,
                                    target=mixed_precision.RecipeTarget(kind="max_drop", value=goal.max_drop_pts))
    steps = [chosen.step + d for d in (-2, -1, 0, 1, 2) if 0 < chosen.step + d < len(candidates)]
    return [candidates[step].spec.to_dict() for step in steps]


# --------------------------------------------------------------------------- running


def _run_jobs(*, executor: Any, model: ModelRef, data: DataRef, runs: Sequence[tuple[dict, dict]], options: dict,
              timeout: float, on_progress: Callable[[float, str], None] | None, stage: str) -> tuple[list[int], list[str]]:
    """Submit (spec, origin) pairs as jobs and wait for all; returns (experiment ids, failure lines)."""
    job_ids = [executor.submit(model=model, data=data, spec=spec, options=options, origin=origin,
                               label=f"search · {spec_from_dict(spec).summary()}") for spec, origin in runs]
    deadline = time.monotonic() + timeout
    while True:
        keep_workers(executor)
        jobs = [executor.queue.get(job_id=i) for i in job_ids]
        finished = sum(job.finished for job in jobs)
        if on_progress is not None:
            on_progress(finished / max(1, len(jobs)), f"{stage}: {finished}/{len(jobs)} runs finished")
        if finished == len(jobs) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    done = [int(job.experiment_id) for job in jobs if job.experiment_id is not None]
    failed = [f"{spec_from_dict(job.spec).summary()}: {job.error or job.state}" for job in jobs
              if job.experiment_id is None]
    return done, failed


def run_search(
    *, executor: Any, model: ModelRef, data: DataRef, goal: SearchGoal, options: dict | None = None,
    configs: Sequence[dict] | None = None, timeout: float = 3600.0,
    on_progress: Callable[[float, str], None] | None = None,
) -> SearchResult:
    """Run the grid configs the model lacks, mixed-precision candidates and refinements; return the winner."""
    from core.store import ExperimentStore

    store = ExperimentStore(executor.queue.home)
    options = dict(options or {})
    origin = {"kind": "search", "id": f"within {goal.max_drop_pts:g} pts, {goal.objective}", "label": None,
              "parent_experiment_id": None}
    origin["label"] = f"search: {origin['id']}"
    configs = list(configs) if configs is not None else list(preset_grid(name="weight-only exploration").configs)
    records = store.list(model=model.source_id)
    ran: list[int] = []
    failed: list[str] = []

    def stage(specs: list[dict], name: str) -> None:
        if not specs:
            return
        current = store.list(model=model.source_id)
        runs = [(spec, {**origin, "parent_experiment_id": _parent_of(spec, current)}) for spec in specs]
        done, bad = _run_jobs(executor=executor, model=model, data=data, runs=runs, options=options,
                              timeout=timeout, on_progress=on_progress, stage=name)
        ran.extend(done)
        failed.extend(bad)

    stage(missing_configs(configs=configs, records=records), "uniform settings")
    records = store.list(model=model.source_id)
    if goal.objective == "size":  # recipes trade bytes for accuracy; they do not target latency
        mixed = mixed_precision_specs(model=model, data=data, goal=goal, records=records, home=store.home)
        stage(missing_configs(configs=mixed, records=records), "mixed-precision candidates")
    for round_number in range(1, REFINE_ROUNDS + 1 if goal.refine else 1):
        records = store.list(model=model.source_id)
        refinements = missing_configs(configs=refinement_specs(records, goal=goal), records=records)
        if not refinements:
            break
        stage(refinements, f"layer-skip refinement, round {round_number}")
    return pick_winner(store.list(model=model.source_id), goal=goal, ran=ran, failed=failed)


def _parent_of(spec: dict, records: Sequence[dict]) -> int | None:
    """The experiment a refinement derives from: the same spec without overrides (None for a plain config)."""
    if not spec.get("overrides"):
        return None
    base = _key({k: v for k, v in spec.items() if k != "overrides"})
    for record in records:
        if record.get("spec") and not record["spec"].get("overrides") and _key(record["spec"]) == base:
            return int(record["id"])
    return None
