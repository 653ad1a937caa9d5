"""The measured mixed-precision search (``core.explore.mp_search``) as a background job, and what pages read back.

``measured_recipe`` runs the search in the calling process: every layer × setting compressed and measured once on a
class-balanced calibration slice of the training pool (``prepare_search``), the recipe for the target chosen by
measured moves (``search_recipe``), and — so the curve shows predicted against measured — every candidate of the
knapsack path measured on the same slice. The CLI calls it directly.

The dashboard never runs it: ``submit_recipe_search`` queues a job of kind ``recipe_search`` (core.jobs), which a
worker process runs through ``run_search_job`` with the queue's progress, heartbeat and cancel; with
``MeasuredSearchRequest.run`` the same job then runs the chosen recipe as a real experiment (real .mlpackage) saved
with origin ``{"kind": "recipe", "id": "recipe-search-<job id>", …}``. The result (curve, chosen recipe, per-layer
rows, the real run's predicted-vs-measured) is the job row's JSON ``result``; ``search_result`` reads it back, and
``latest_search_job`` finds a model's newest search again after a rerun, a page switch or a reload.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from core.explore import mixed_precision as mp
from core.explore.mp_search import RecipeSearchConfig
from core.jobs.kinds import JobContext, JobKind, JobOutcome
from core.jobs.queue import RECIPE_SEARCH_JOB, Job, JobQueue
from core.jobs.refs import DataRef, ModelRef
from core.progress import Progress, as_progress

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from core.data import Dataset
    from core.models.sources import LoadedModel

# The real run of a recipe measures size and accuracy; latency and memory are the Compress page's business.
RUN_OPTIONS = {"measure_latency": False, "measure_memory": False}
ORIGIN_PREFIX = "recipe-search-"


def _config_to_dict(config: RecipeSearchConfig) -> dict:
    data = dataclasses.asdict(config)
    data["settings"] = list(config.settings)
    return data


def _config_from_dict(data: dict) -> RecipeSearchConfig:
    known = {f.name for f in dataclasses.fields(RecipeSearchConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise mp.RecipeError(f"search config: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
    return RecipeSearchConfig(**data)


@dataclass(frozen=True)
class MeasuredSearchRequest:
    """What a measured search is asked: the target, how the search measures, and whether to run the recipe after."""

    target: mp.RecipeTarget
    config: RecipeSearchConfig = field(default_factory=RecipeSearchConfig)
    run: bool = False  # then run the chosen recipe as a real experiment (real .mlpackage), saved to the store
    run_eval_limit: int | None = None  # evaluation images of that run (None: the whole evaluation split)
    measure_curve: bool = True  # measure every candidate of the path on the calibration slice too

    def __post_init__(self) -> None:
        if not isinstance(self.target, mp.RecipeTarget):
            raise mp.RecipeError(f"target must be a RecipeTarget; got {type(self.target).__name__}.")
        if not isinstance(self.config, RecipeSearchConfig):
            raise mp.RecipeError(f"config must be a RecipeSearchConfig; got {type(self.config).__name__}.")
        for name in ("run", "measure_curve"):
            if not isinstance(getattr(self, name), bool):
                raise mp.RecipeError(f"{name} must be true or false; got {getattr(self, name)!r}.")
        limit = self.run_eval_limit
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise mp.RecipeError(f"run_eval_limit must be a positive number of images or None; got {limit!r}.")

    def to_dict(self) -> dict:
        return {"target": {"kind": self.target.kind, "value": float(self.target.value)},
                "config": _config_to_dict(self.config), "run": self.run, "run_eval_limit": self.run_eval_limit,
                "measure_curve": self.measure_curve}

    @classmethod
    def from_dict(cls, data: dict) -> MeasuredSearchRequest:
        if not isinstance(data, dict):
            raise mp.RecipeError(f"a measured search request must be a dict; got {type(data).__name__}.")
        unknown = sorted(set(data) - {"target", "config", "run", "run_eval_limit", "measure_curve"})
        if unknown:
            raise mp.RecipeError(f"measured search request: unknown key(s) {', '.join(unknown)}.")
        target = data.get("target")
        if not isinstance(target, dict) or set(target) != {"kind", "value"}:
            raise mp.RecipeError("target must be {'kind': …, 'value': …}.")
        return cls(target=mp.RecipeTarget(kind=target["kind"], value=target["value"]),
                   config=_config_from_dict(dict(data.get("config") or {})), run=data.get("run", False),
                   run_eval_limit=data.get("run_eval_limit"), measure_curve=data.get("measure_curve", True))

    def describe(self) -> str:
        settings = ", ".join(mp.setting_label(s) for s in self.config.settings)
        return (f"{self.target.describe()} · {settings} · {self.config.calibration_images:,} calibration images"
                + (" · then a real run" if self.run else ""))


# --------------------------------------------------------------------------- the result


def _finite(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else float(value)


def candidate_to_dict(candidate: mp.Candidate) -> dict:
    """A Candidate as JSON (an infinite SNR — nothing compressed — written as None)."""
    return {"step": candidate.step, "choices": [[layer, key] for layer, key in candidate.choices],
            "spec": candidate.spec.to_dict(), "predicted_bytes": float(candidate.predicted_bytes),
            "predicted_bits_per_weight": float(candidate.predicted_bits_per_weight),
            "predicted_snr_db": _finite(candidate.predicted_snr_db), "predicted_drop": _finite(candidate.predicted_drop),
            "calibration": candidate.calibration}


def candidate_from_dict(data: dict) -> mp.Candidate:
    from core.specs import CompressionSpec, spec_from_dict

    spec = spec_from_dict(data["spec"])
    assert isinstance(spec, CompressionSpec)
    snr = data.get("predicted_snr_db")
    return mp.Candidate(step=int(data["step"]), choices=tuple((str(layer), key) for layer, key in data["choices"]),
                        spec=spec, predicted_bytes=float(data["predicted_bytes"]),
                        predicted_bits_per_weight=float(data["predicted_bits_per_weight"]),
                        predicted_snr_db=math.inf if snr is None else float(snr),
                        predicted_drop=data.get("predicted_drop"), calibration=data.get("calibration"))


@dataclass(frozen=True)
class MeasuredRecipe:
    """A measured search's answer: the chosen recipe, the knapsack path (the candidate curve) and what was measured.

    ``chosen.calibration`` / each path candidate's ``calibration`` hold what the calibration slice measured (kl,
    top1_drop, agreement, images); ``experiment`` is ``mixed_precision.compare_prediction`` of the real run, if any.
    """

    request: MeasuredSearchRequest
    chosen: mp.Candidate
    candidates: tuple[mp.Candidate, ...]
    layers: tuple[dict, ...]  # per layer: layer, setting, bytes, kl_alone, top1_change_alone_pts
    calibration: str  # which images the search measured on
    evaluations: int  # recipes measured as a whole
    log: tuple[str, ...]
    seconds: float
    experiment: dict | None = None

    def to_dict(self) -> dict:
        return {"request": self.request.to_dict(), "chosen": candidate_to_dict(self.chosen),
                "candidates": [candidate_to_dict(c) for c in self.candidates], "layers": list(self.layers),
                "calibration": self.calibration, "evaluations": self.evaluations, "log": list(self.log),
                "seconds": self.seconds, "experiment": self.experiment}

    @classmethod
    def from_dict(cls, data: dict) -> MeasuredRecipe:
        return cls(request=MeasuredSearchRequest.from_dict(data["request"]), chosen=candidate_from_dict(data["chosen"]),
                   candidates=tuple(candidate_from_dict(c) for c in data["candidates"]),
                   layers=tuple(data.get("layers") or ()), calibration=str(data.get("calibration") or ""),
                   evaluations=int(data.get("evaluations") or 0), log=tuple(data.get("log") or ()),
                   seconds=float(data.get("seconds") or 0.0), experiment=data.get("experiment"))

    def candidates_frame(self) -> pd.DataFrame:
        """One row per candidate of the path (mixed_precision.candidates_frame columns), largest first."""
        return mp.candidates_frame(list(self.candidates))

    def layers_frame(self) -> pd.DataFrame:
        return pd.DataFrame(list(self.layers))

    def calibration_drop_pts(self) -> float | None:
        drop = (self.chosen.calibration or {}).get("top1_drop")
        return None if drop is None else drop * 100


def _layer_rows(problem: Any, chosen: mp.Candidate) -> tuple[dict, ...]:
    rows = []
    for name, key in chosen.choices:
        option = problem.option(name, key)
        rows.append({"layer": name, "setting": mp.setting_label(key) if key else "fp16 (uncompressed)",
                     "bytes": float(option.bytes), "kl_alone": float(option.kl),
                     "top1_change_alone_pts": None if option.top1_change is None else option.top1_change * 100})
    return tuple(rows)


def measured_recipe(*, model: LoadedModel, dataset: Dataset | None, request: MeasuredSearchRequest,
                    progress: Progress | None = None) -> MeasuredRecipe:
    """Run the measured search here (the CLI; a worker process for the dashboard) and return its answer."""
    from core.explore.mp_search import measure, prepare_search, search_recipe

    progress = as_progress(progress)
    started = time.perf_counter()
    problem = prepare_search(model=model, dataset=dataset, config=request.config, progress=progress.sub(0.0, 0.75))
    found = search_recipe(problem=problem, target=request.target, progress=progress.sub(0.75, 0.95))
    candidates = list(found.candidates)
    if request.measure_curve:  # one forward pass on the calibration slice per candidate
        curve = progress.sub(0.95, 1.0)
        for index, candidate in enumerate(candidates):
            curve.update(index / len(candidates), f"Measuring candidate {index + 1}/{len(candidates)} of the curve")
            measured = measure(problem, dict(candidate.choices))
            candidates[index] = dataclasses.replace(candidate, calibration=dict(measured))
    progress.update(1.0, "Recipe chosen")
    return MeasuredRecipe(request=request, chosen=found.chosen, candidates=tuple(candidates),
                          layers=_layer_rows(problem, found.chosen), calibration=found.calibration,
                          evaluations=len(problem.measured), log=tuple(found.log),
                          seconds=time.perf_counter() - started)


# --------------------------------------------------------------------------- lineage and the real run


def recipe_id(job_id: int) -> str:
    """The origin id of the experiments run from measured search job `job_id`."""
    return f"{ORIGIN_PREFIX}{int(job_id)}"


def search_origin(*, job_id: int, chosen: mp.Candidate) -> dict:
    """core.jobs.origins' shape for a run of the recipe found by search job `job_id`."""
    origin = mp.recipe_origin(candidate=chosen, recipe_id=recipe_id(job_id))
    return {**origin, "label": f"measured recipe search #{int(job_id)}"}


def recipe_experiments(records: Sequence[dict], *, job_id: int) -> list[dict]:
    """The experiments (newest first, as the store lists them) run from the recipe of search job `job_id`."""
    rid = recipe_id(job_id)
    return [r for r in records if (r.get("origin") or {}).get("kind") == "recipe" and (r.get("origin") or {}).get("id") == rid]


def measured_points(result: MeasuredRecipe, records: Sequence[dict]) -> pd.DataFrame:
    """The real runs of the chosen recipe as candidate_curve_figure's `measured` rows (predicted → measured)."""
    rows = []
    for record in records:
        outcome = mp.compare_prediction(candidate=result.chosen, record=record)
        if outcome["measured_drop"] is None:
            continue
        rows.append({"predicted_mb": outcome["predicted_bytes"] / 1e6,
                     "measured_mb": (outcome["measured_bytes"] or outcome["theoretical_bytes"] or 0) / 1e6,
                     "predicted_y": (result.chosen.predicted_drop or 0.0) * 100,
                     "measured_y": outcome["measured_drop"] * 100})
    return pd.DataFrame(rows, columns=["predicted_mb", "measured_mb", "predicted_y", "measured_y"])


def curve_figure(result: MeasuredRecipe, *, records: Sequence[dict] = ()) -> go.Figure:
    """The candidate curve: the path as predicted, each candidate as measured on the calibration slice, the chosen
    recipe, and its real runs (evaluation images) — drawn with sensitivity_charts.candidate_curve_figure."""
    import plotly.graph_objects as go

    from core import charts
    from core.explore.sensitivity_charts import candidate_curve_figure

    frame = result.candidates_frame()
    figure = candidate_curve_figure(frame, measured=measured_points(result, records),
                                    title="Measured search: candidate size vs accuracy drop")
    if len(figure.data):
        figure.data[0].name = "predicted (knapsack path)"
    if not frame["predicted_drop_pts"].notna().any():  # no drop fit: the figure's y axis is the output SNR
        return figure
    calibrated = frame[frame["calibration_drop_pts"].notna()]
    if len(calibrated):
        figure.add_trace(go.Scatter(x=calibrated["predicted_mb"], y=calibrated["calibration_drop_pts"].astype(float),
                                    mode="markers", name="measured (calibration slice)",
                                    marker={"size": 8, "symbol": "circle-open", "color": charts.BASELINE_COLOR}))
    chosen = mp.candidates_frame([result.chosen]).iloc[0]
    y = chosen["calibration_drop_pts"] if chosen["calibration_drop_pts"] is not None else chosen["predicted_drop_pts"]
    figure.add_trace(go.Scatter(x=[chosen["predicted_mb"]], y=[y], mode="markers", name="chosen recipe (measured)",
                                marker={"size": 14, "symbol": "star", "color": charts.ACCENT_COLOR}))
    return figure


# --------------------------------------------------------------------------- the job


def submit_recipe_search(*, executor: Any, model: ModelRef, data: DataRef, request: MeasuredSearchRequest,
                         label: str | None = None) -> int:
    """Queue a measured search (job kind ``recipe_search``) on `executor`; returns the job id."""
    return int(executor.submit(model=model, data=data, spec={}, options=request.to_dict(), kind=RECIPE_SEARCH_JOB,
                               label=label or f"Measured recipe search · {request.target.describe()}"))


def search_jobs(*, queue: JobQueue, model: str, limit: int = 200) -> list[Job]:
    """Measured search jobs of model source id `model`, newest first."""
    return [job for job in queue.list(limit=limit) if job.kind == RECIPE_SEARCH_JOB and job.model_ref.source_id == model]


def latest_search_job(*, queue: JobQueue, model: str) -> Job | None:
    jobs = search_jobs(queue=queue, model=model)
    return jobs[0] if jobs else None


def search_result(job: Job) -> MeasuredRecipe | None:
    """The answer of a finished search job (None while it runs, or when it failed / was cancelled)."""
    if job.kind != RECIPE_SEARCH_JOB or not job.result or "chosen" not in job.result:
        return None
    return MeasuredRecipe.from_dict(job.result)


class RecipeSearchKind(JobKind):
    """Job kind ``recipe_search``: the measured mixed-precision search in a worker; its curve and recipe go to the
    job's ``result``, its optional real run to the store."""

    kind = RECIPE_SEARCH_JOB

    def run(self, context: JobContext) -> JobOutcome:
        return run_search_job(context)


def run_search_job(context: JobContext) -> JobOutcome:
    """The search, then — when asked — the chosen recipe as a real experiment, saved with the search's origin."""
    from core.jobs.experiment_kinds import save_experiment
    from core.jobs.refs import options_from_dict
    from core.paths import cache_dir

    queue, job, cache, lock, tracker, phases = (context.queue, context.job, context.cache, context.lock,
                                                context.tracker, context.phases)
    request = MeasuredSearchRequest.from_dict(job.options)
    progress: Progress = tracker.progress
    with lock.compute():  # nothing is timed here; a timing job elsewhere waits for the compute to stop
        started = time.perf_counter()
        progress.update(0.0, "Loading the model and data")
        model = cache.model(ref=job.model_ref)
        dataset = cache.dataset(ref=job.data_ref, model=model)
        phases["load"] = time.perf_counter() - started
        started = time.perf_counter()
        result = measured_recipe(model=model, dataset=dataset, request=request,
                                 progress=progress.sub(0.02, 0.7 if request.run else 1.0))
        phases["search"] = time.perf_counter() - started
        experiment_id = None
        if request.run:
            origin = search_origin(job_id=job.id, chosen=result.chosen)
            options = options_from_dict(data={**RUN_OPTIONS, "eval_limit": request.run_eval_limit},
                                        cache_dir=cache_dir(queue.home))

            def finalize(record: dict, _seconds: float) -> None:
                record["job_id"] = job.id
                record["origin"] = origin

            record = save_experiment(store=context.store(), model=model, spec=result.chosen.spec, dataset=dataset,
                                     options=options, progress=progress.sub(0.7, 1.0),
                                     staging_prefix=queue.staging_prefix(job_id=job.id), finalize=finalize,
                                     phases=phases)
            experiment_id = int(record["id"])
            result = dataclasses.replace(result, experiment=mp.compare_prediction(candidate=result.chosen, record=record))
    drop = result.calibration_drop_pts()
    message = (f"Recipe: {result.chosen.predicted_bits_per_weight:.2f} bits/weight"
               + (f", {drop:.2f} pts lost on the calibration slice" if drop is not None else "")
               + (f"; experiment #{experiment_id}" if experiment_id is not None else ""))
    return JobOutcome(experiment_id=experiment_id, result=result.to_dict(), message=message)


__all__ = [
    "RUN_OPTIONS",
    "MeasuredRecipe",
    "MeasuredSearchRequest",
    "RecipeSearchKind",
    "candidate_from_dict",
    "candidate_to_dict",
    "curve_figure",
    "latest_search_job",
    "measured_points",
    "measured_recipe",
    "recipe_experiments",
    "recipe_id",
    "run_search_job",
    "search_jobs",
    "search_origin",
    "search_result",
    "submit_recipe_search",
]
