"""Accuracy-budget search: "the smallest (or fastest) model within X points of the baseline".

``pick_winner`` answers from experiments already in the store (sweeps, recipes, manual runs). ``run_search`` runs
what the answer needs first: the configs of a grid (default: the weight-only exploration preset) the model has no
experiment for yet; for the size objective the per-layer sensitivity table (computed when none is cached for the
model and data) and the mixed-precision candidates of ``core.explore.mixed_precision`` built from it; and a
layer-skip refinement (Apple's exploration protocol): the most promising setting that broke the budget is rerun
with its most sensitive layers kept at the best in-budget setting of the same method. Every run is a job whose
experiment carries ``origin = {"kind": "search", "id": <search id>, …}``.

A search is recorded in the ``SearchBook`` (table ``explore_searches`` in the store's SQLite file: state, progress,
its jobs, its winner). The dashboard starts it with ``start_search_process`` — a process of its own, so the
Streamlit process never compresses, probes or times anything — and follows it from the book, across reruns,
reloads and page switches; the CLI runs ``run_search`` in its own process.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from core.compress.registry import searchable_methods
from core.explore.books import StoreBook
from core.explore.sweeps import SELECTION_IMAGES, keep_workers, preset_grid
from core.formatting import as_number, fmt_num, fmt_size_ratio, plural
from core.jobs.refs import DataRef, ModelRef
from core.progress import Cancelled
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
                     "validation_drop_pts", "validation_images", "size_bytes", "compression_ratio_fp16",
                     "latency_ms_p50", "latency_ratio", "within_budget")


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


def validation_drop_pts(record: dict) -> float | None:
    """Points lost against the baseline on the record's validation images (training pool, never test images):
    what a search chooses by. None when the run did not measure them."""
    acc = as_number(record.get("validation_accuracy_top1"))
    base = as_number(record.get("baseline_validation_accuracy_top1"))
    return None if acc is None or base is None else (base - acc) * 100


def has_validation(record: dict) -> bool:
    return validation_drop_pts(record) is not None


def _size(record: dict) -> float | None:
    """The artifact's bytes on disk; without an exported artifact, the per-layer theoretical bytes."""
    return as_number(record.get("size_bytes")) or as_number(record.get("theoretical_size_bytes"))


def candidates_frame(records: Sequence[dict], *, goal: SearchGoal) -> pd.DataFrame:
    """Every experiment with its drops and whether it is within the budget, best objective first.

    The budget is judged on the validation drop (training-pool images) — the test drop (`drop_pts`) only confirms
    it; an experiment without validation numbers is never within the budget (it could only be judged on the test
    images it is then reported on).
    """
    rows = []
    for record in records:
        if record.get("kind", "experiment") != "experiment":
            continue
        drop, chosen_on = _drop_pts(record), validation_drop_pts(record)
        if chosen_on is None and not record.get("accuracy_meaningful", True):
            chosen_on = drop  # no labels at all: agreement with the baseline is all there is, on either set
        origin = (record.get("origin") or {}).get("kind") or "manual"
        rows.append({
            "id": record.get("id"), "spec_summary": config_label(record), "method": record.get("method"),
            "origin": origin, "accuracy_top1": record.get("accuracy_top1"),
            "baseline_accuracy_top1": record.get("baseline_accuracy_top1"), "drop_pts": drop,
            "validation_drop_pts": chosen_on, "validation_images": record.get("validation_images"),
            "size_bytes": _size(record), "compression_ratio_fp16": record.get("compression_ratio_fp16"),
            "latency_ms_p50": record.get("latency_ms_p50"), "latency_ratio": record.get("latency_ratio"),
            "within_budget": chosen_on is not None and chosen_on <= goal.max_drop_pts + 1e-9,
        })
    frame = pd.DataFrame(rows, columns=list(CANDIDATE_COLUMNS))
    for column in ("accuracy_top1", "baseline_accuracy_top1", "drop_pts", "validation_drop_pts", "validation_images",
                   "size_bytes", "compression_ratio_fp16", "latency_ms_p50", "latency_ratio"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["within_budget"] = frame["within_budget"].astype(bool)
    return frame.sort_values([goal.column, "validation_drop_pts"], na_position="last").reset_index(drop=True)


def _points(drop: float | None) -> str:
    if drop is None:
        return "accuracy not measured"
    if abs(drop) < 0.05:
        return "no accuracy lost (±0.0 points)"
    return f"{fmt_num(-drop, '+.1f')} points".replace("-", "−")


def chosen_and_confirmed(record: dict) -> str:
    """'chosen on 2,000 validation images: −0.6 points; confirmed on 10,000 test images: −0.8 points'."""
    validation, images = validation_drop_pts(record), as_number(record.get("validation_images"))
    test = _drop_pts(record)
    confirmed = f"confirmed on {int(record.get('eval_images') or 0):,} test images: {_points(test)}"
    if validation is None or images is None:
        return f"no validation images measured; on {int(record.get('eval_images') or 0):,} test images: {_points(test)}"
    return f"chosen on {int(images):,} validation images: {_points(validation)}; {confirmed}"


def stakeholder_sentence(record: dict, *, objective: str = "size") -> str:
    """'4.1× smaller, −0.4 points' (or '1.8× faster, …'): what a stakeholder needs to hear (test images)."""
    points = _points(_drop_pts(record))
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
    return f"{fmt_size_ratio(ratio, 1)}, {points}"


@dataclass(frozen=True)
class SearchResult:
    """The winner (None when nothing is within the budget), every candidate, and what the search ran."""

    goal: SearchGoal
    winner: dict | None
    candidates: pd.DataFrame = field(compare=False)
    ran_experiments: tuple[int, ...] = ()
    failed_jobs: tuple[str, ...] = ()
    search_id: int | None = None  # the SearchBook row of the search that ran (None: answered from the store)
    notes: tuple[str, ...] = ()  # what the search left out and why (no labels for mixed precision, …)

    @property
    def sentence(self) -> str:
        if self.winner is None:
            if len(self.candidates) and self.candidates["validation_drop_pts"].isna().all():
                return ("No experiment of this model was measured on validation images yet, and a winner is never "
                        "chosen on the test images it is reported on: run the search, which measures them.")
            return f"Nothing is within {plural(self.goal.max_drop_pts, 'point')} of the baseline yet."
        verb = OBJECTIVES[self.goal.objective][1]
        return (f"#{self.winner['id']} {config_label(self.winner)}: {verb} within "
                f"{plural(self.goal.max_drop_pts, 'point')} — {stakeholder_sentence(self.winner, objective=self.goal.objective)} "
                f"({chosen_and_confirmed(self.winner)}).")


def pick_winner(records: Sequence[dict], *, goal: SearchGoal, ran: Sequence[int] = (),
                failed: Sequence[str] = ()) -> SearchResult:
    """The best experiment within the budget among `records` (one model's experiments), judged on its validation
    images (training pool); its test numbers confirm the choice and are reported beside it."""
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
                       & frame["method"].isin(searchable_methods())].sort_values("drop_pts")
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


def mixed_precision_specs(*, sensitivity: Any, goal: SearchGoal) -> tuple[list[dict], str | None]:
    """Mixed-precision candidates from a sensitivity table: the greedy recipe predicted to stay within the budget
    plus its neighbours (two safer steps, two bolder ones: the prediction is a fit, the runs measure).

    Calls only the public functions of ``core.explore.mixed_precision``. Returns (spec dicts, a note saying why
    there are none, or None).
    """
    from core.explore import mixed_precision as mp

    if not sensitivity.has_labels:
        return [], ("mixed precision skipped: the sensitivity table has no labels (synthetic inputs), so no "
                    "accuracy drop can be predicted for a recipe")
    try:
        candidates = mp.mixed_precision_candidates(sensitivity=sensitivity)
        chosen = mp.choose(candidates=candidates, target=mp.RecipeTarget(kind="max_drop", value=goal.max_drop_pts))
    except mp.RecipeError as exc:
        return [], f"mixed precision skipped: {exc}"
    at = next(i for i, candidate in enumerate(candidates) if candidate is chosen)  # position, whatever steps are
    around = [at + d for d in MIXED_STEPS if 0 < at + d < len(candidates)]  # position 0 = nothing compressed
    return [spec_from_dict(candidates[i].spec.to_dict()).to_dict() for i in around], None


def ensure_sensitivity(*, model: ModelRef, data: DataRef, home: Path, progress: Any = None) -> tuple[Any, str | None]:
    """The model's sensitivity table on this data with the default probe settings: from the cache, or computed now
    (``core.explore.sensitivity.run_sensitivity``, under the shared compute lock so no job times meanwhile).

    Returns (SensitivityResult or None, a note when there is none)."""
    from core.explore.sensitivity import SensitivityConfig, SensitivityError, run_sensitivity
    from core.jobs.refs import load_data_ref, load_model_ref
    from core.jobs.timing_lock import TimingLock
    from core.paths import cache_dir

    loaded = load_model_ref(ref=model)
    from core.compress.applicability import graph_unavailable_reason

    unavailable = graph_unavailable_reason(model=loaded)
    if unavailable:
        return None, f"mixed precision skipped: {unavailable}"
    dataset = load_data_ref(ref=data, model=loaded)
    lock = TimingLock()
    try:
        with lock.compute():
            result = run_sensitivity(model=loaded, dataset=dataset, config=SensitivityConfig(), progress=progress,
                                     cache_root=cache_dir(Path(home)))
    except SensitivityError as exc:
        return None, f"mixed precision skipped: {exc}"
    finally:
        lock.close()
    return result, None


# --------------------------------------------------------------------------- the search book (SQLite)

SEARCH_STATES = ("starting", "running", "done", "failed", "cancelled")
SEARCH_FINISHED = ("done", "failed", "cancelled")
MIXED_STEPS = (-2, -1, 0, 1, 2)  # greedy-path steps around the recipe predicted to meet the budget
# Where the search's bar stands when each stage starts; a stage fills the span up to the next one.
STAGES = {"uniform settings": 0.0, "sensitivity": 0.45, "mixed-precision candidates": 0.6,
          "layer-skip refinement": 0.8, "done": 1.0}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS explore_searches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    model_ref TEXT NOT NULL,
    data_ref TEXT NOT NULL,
    goal TEXT NOT NULL,
    options TEXT NOT NULL,
    configs TEXT NOT NULL,
    state TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    updated_at REAL,
    finished_at REAL,
    pid INTEGER,
    host TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    winner_id INTEGER,
    sentence TEXT,
    ran TEXT NOT NULL DEFAULT '[]',
    failed TEXT NOT NULL DEFAULT '[]',
    notes TEXT NOT NULL DEFAULT '[]',
    error TEXT
);
CREATE TABLE IF NOT EXISTS explore_search_jobs (
    search_id INTEGER NOT NULL,
    job_id INTEGER NOT NULL,
    PRIMARY KEY (search_id, job_id)
);
"""
_FIELDS = ("state", "progress", "message", "updated_at", "finished_at", "pid", "host", "winner_id", "sentence",
           "ran", "failed", "notes", "error")


class SearchCancelled(Exception):
    """The user asked the search to stop; its unfinished runs are cancelled."""


@dataclass(frozen=True)
class SearchRun:
    """One stored search: what it was asked, where it stands, and (when done) its winner."""

    id: int
    created_at: float
    model_ref: ModelRef
    data_ref: DataRef
    goal: SearchGoal
    options: dict
    configs: tuple[dict, ...]
    state: str
    progress: float
    message: str
    updated_at: float | None
    finished_at: float | None
    pid: int | None
    host: str | None
    cancel_requested: bool
    winner_id: int | None
    sentence: str | None
    ran: tuple[int, ...]
    failed: tuple[str, ...]
    notes: tuple[str, ...]
    error: str | None
    job_ids: tuple[int, ...]

    @property
    def finished(self) -> bool:
        return self.state in SEARCH_FINISHED

    @property
    def origin(self) -> dict:
        """core.jobs.origins: every run of this search hangs under 'search #N' in the lineage map."""
        verb = OBJECTIVES[self.goal.objective][1]
        return {"kind": "search", "id": self.id, "parent_experiment_id": None,
                "label": f"search #{self.id}: {verb} within {self.goal.max_drop_pts:g} pts"}


def goal_to_dict(goal: SearchGoal) -> dict:
    return {"max_drop_pts": float(goal.max_drop_pts), "objective": goal.objective, "refine": bool(goal.refine)}


class SearchBook(StoreBook):
    """Searches of the data folder `home`, in the store's SQLite file next to the job queue and the sweeps."""

    SCHEMA = _SCHEMA

    def create(self, *, model: ModelRef, data: DataRef, goal: SearchGoal, options: dict,
               configs: Sequence[dict] | None, state: str = "starting") -> int:
        with self._connection() as conn:
            cursor = conn.execute(
                "INSERT INTO explore_searches (created_at, model_ref, data_ref, goal, options, configs, state,"
                " updated_at, message) VALUES (?,?,?,?,?,?,?,?,?)",
                (time.time(), json.dumps(model.to_dict()), json.dumps(data.to_dict()), json.dumps(goal_to_dict(goal)),
                 json.dumps(options), json.dumps(list(configs) if configs is not None else None), state, time.time(),
                 "Starting the search process"),
            )
            return int(cursor.lastrowid)

    def update(self, *, search_id: int, **fields: Any) -> None:
        unknown = sorted(set(fields) - set(_FIELDS))
        if unknown:
            raise SearchError(f"search book: unknown field(s) {', '.join(unknown)}.")
        values = [json.dumps(list(v)) if k in ("ran", "failed", "notes") else v for k, v in fields.items()]
        assignments = ", ".join(f"{k}=?" for k in fields)
        with self._connection() as conn:
            conn.execute(f"UPDATE explore_searches SET {assignments} WHERE id=?", [*values, int(search_id)])

    def add_jobs(self, *, search_id: int, job_ids: Sequence[int]) -> None:
        with self._connection() as conn:
            conn.executemany("INSERT OR IGNORE INTO explore_search_jobs (search_id, job_id) VALUES (?,?)",
                             [(int(search_id), int(j)) for j in job_ids])

    def get(self, *, search_id: int) -> SearchRun:
        self.reap()
        with self._connection() as conn:
            row = conn.execute(
                "SELECT id, created_at, model_ref, data_ref, goal, options, configs, state, progress, message,"
                " updated_at, finished_at, pid, host, cancel_requested, winner_id, sentence, ran, failed, notes, error"
                " FROM explore_searches WHERE id=?", (int(search_id),)).fetchone()
            if row is None:
                raise SearchError(f"search #{search_id} does not exist.")
            jobs = [int(r[0]) for r in conn.execute(
                "SELECT job_id FROM explore_search_jobs WHERE search_id=? ORDER BY job_id", (int(search_id),))]
        configs = json.loads(row[6])
        return SearchRun(
            id=int(row[0]), created_at=float(row[1]), model_ref=ModelRef.from_dict(json.loads(row[2])),
            data_ref=DataRef.from_dict(json.loads(row[3])), goal=SearchGoal(**json.loads(row[4])),
            options=json.loads(row[5]), configs=tuple(configs) if configs is not None else (), state=row[7],
            progress=float(row[8]), message=row[9] or "", updated_at=row[10], finished_at=row[11], pid=row[12],
            host=row[13], cancel_requested=bool(row[14]), winner_id=row[15], sentence=row[16],
            ran=tuple(json.loads(row[17])), failed=tuple(json.loads(row[18])), notes=tuple(json.loads(row[19])),
            error=row[20], job_ids=tuple(jobs),
        )

    def list(self, *, model: str | None = None, limit: int = 20) -> list[SearchRun]:
        """Searches, newest first (of one model source id when given)."""
        with self._connection() as conn:
            ids = [int(r[0]) for r in conn.execute("SELECT id FROM explore_searches ORDER BY id DESC")]
        runs = [self.get(search_id=i) for i in ids]
        return [r for r in runs if model is None or r.model_ref.source_id == model][:limit]

    def latest(self, *, model: str) -> SearchRun | None:
        runs = self.list(model=model, limit=1)
        return runs[0] if runs else None

    def request_cancel(self, *, search_id: int) -> None:
        """Ask the search to stop (it cancels its unfinished runs at its next poll); its queued runs stop now."""
        with self._connection() as conn:
            conn.execute("UPDATE explore_searches SET cancel_requested=1, message=? WHERE id=? AND state IN (?,?)",
                         ("Cancelling…", int(search_id), "starting", "running"))
        self.cancel_jobs(search_id=search_id)

    def cancel_requested(self, *, search_id: int) -> bool:
        with self._connection() as conn:
            row = conn.execute("SELECT cancel_requested FROM explore_searches WHERE id=?", (int(search_id),))
            found = row.fetchone()
        return bool(found and found[0])

    def cancel_jobs(self, *, search_id: int) -> int:
        from core.jobs.queue import QUEUED, RUNNING

        with self._connection() as conn:
            jobs = [int(r[0]) for r in conn.execute("SELECT job_id FROM explore_search_jobs WHERE search_id=?",
                                                    (int(search_id),))]
        stopped = 0
        for job_id in jobs:
            if self.queue.get(job_id=job_id).state in (QUEUED, RUNNING):
                self.queue.cancel(job_id=job_id)
                stopped += 1
        return stopped

    def reap(self) -> list[int]:
        """Fail searches whose process on this host is gone without finishing (killed, crashed)."""
        from core.jobs.queue import pid_alive, this_host

        _collect_children()
        with self._connection() as conn:
            rows = conn.execute("SELECT id, pid, host, created_at FROM explore_searches WHERE state IN (?,?)",
                                ("starting", "running")).fetchall()
        failed = []
        for search_id, pid, host, created in rows:
            dead = pid is not None and host == this_host() and not pid_alive(int(pid))
            never_started = pid is None and time.time() - float(created) > 60
            if dead or never_started:
                log = _log_path(self.home, int(search_id))
                self.update(search_id=int(search_id), state="failed", finished_at=time.time(), message="Failed",
                            error=f"the search process stopped before finishing (log: {log})")
                failed.append(int(search_id))
        return failed


# --------------------------------------------------------------------------- running


class _Reporter:
    """Progress of one search: into its book row (throttled), to an optional callback, and the cancel check."""

    def __init__(self, *, book: SearchBook, search_id: int,
                 on_progress: Callable[[float, str], None] | None) -> None:
        self.book, self.search_id, self.on_progress = book, search_id, on_progress
        self._last = 0.0

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - self._last >= 0.5 or fraction >= 1.0:
            self._last = now
            if self.book.cancel_requested(search_id=self.search_id):
                raise SearchCancelled(f"search #{self.search_id} cancelled")
            self.book.update(search_id=self.search_id, progress=float(min(max(fraction, 0.0), 1.0)),
                             message=message[:300], updated_at=time.time())
        if self.on_progress is not None:
            self.on_progress(fraction, message)

    def stage(self, name: str) -> Callable[[float, str], None]:
        """A callback filling the span of stage `name` (STAGES)."""
        names = list(STAGES)
        start, end = STAGES[name], STAGES[names[names.index(name) + 1]]
        return lambda f, m: self(start + (end - start) * min(max(f, 0.0), 1.0), m)


def _run_jobs(*, executor: Any, model: ModelRef, data: DataRef, runs: Sequence[tuple[dict, dict]], options: dict,
              timeout: float, on_progress: Callable[[float, str], None], stage: str, book: SearchBook,
              search_id: int) -> tuple[list[int], list[str]]:
    """Submit (spec, origin) pairs as jobs and wait for all; returns (experiment ids, failure lines)."""
    job_ids = []
    for spec, origin in runs:
        job_id = executor.submit(model=model, data=data, spec=spec, options=options, origin=origin,
                                 label=f"search #{search_id} · {spec_from_dict(spec).summary()}")
        book.add_jobs(search_id=search_id, job_ids=[job_id])
        job_ids.append(job_id)
    deadline = time.monotonic() + timeout
    while True:
        keep_workers(executor)
        jobs = [executor.queue.get(job_id=i) for i in job_ids]
        finished = sum(job.finished for job in jobs)
        running = [job for job in jobs if job.state == "running"]
        now = f" · now: {running[0].label.split(' · ', 1)[-1]} ({running[0].progress:.0%})" if running else ""
        on_progress(finished / max(1, len(jobs)), f"{stage}: {finished}/{len(jobs)} runs finished{now}")
        if finished == len(jobs) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    done = [int(job.experiment_id) for job in jobs if job.experiment_id is not None]
    failed = [f"{spec_from_dict(job.spec).summary()}: {job.error or job.state}" for job in jobs
              if job.experiment_id is None]
    return done, failed


def _judged(store: Any, model: ModelRef) -> list[dict]:
    """The model's experiments a winner can be chosen among: those with validation numbers (or without labels); a
    config run without them (a manual run, an older search) is run again with them."""
    return [r for r in store.list(model=model.source_id) if has_validation(r) or not r.get("accuracy_meaningful", True)]


def run_search(
    *, executor: Any, model: ModelRef, data: DataRef, goal: SearchGoal, options: dict | None = None,
    configs: Sequence[dict] | None = None, timeout: float = 3600.0,
    on_progress: Callable[[float, str], None] | None = None, search_id: int | None = None,
    mixed_precision: bool = True,
) -> SearchResult:
    """Run what the answer needs, then answer: the grid configs the model lacks; the sensitivity table when none is
    cached for this model and data (default probe settings) and the mixed-precision candidates built from it
    (objective size); layer-skip refinements. Every run is a job tagged ``origin = search #N``.

    The search is recorded in the ``SearchBook`` (a new row, or row `search_id` when a search process was started
    for it), with its progress, its jobs and, at the end, its winner; a cancel request there stops it (its
    unfinished runs are cancelled, ``SearchCancelled`` is raised).
    """
    from core.jobs.queue import this_host
    from core.store import ExperimentStore

    store = ExperimentStore(executor.queue.home)
    book = SearchBook(home=executor.queue.home)
    options = {"validation_images": SELECTION_IMAGES, **(options or {})}
    configs = list(configs) if configs is not None else list(preset_grid(name="weight-only exploration").configs)
    if search_id is None:
        search_id = book.create(model=model, data=data, goal=goal, options=options, configs=configs, state="running")
    book.update(search_id=search_id, state="running", pid=os.getpid(), host=this_host(), updated_at=time.time())
    origin = book.get(search_id=search_id).origin
    report = _Reporter(book=book, search_id=search_id, on_progress=on_progress)
    ran: list[int] = []
    failed: list[str] = []
    notes: list[str] = []

    def stage(specs: list[dict], name: str, key: str) -> None:
        if not specs:
            return
        current = store.list(model=model.source_id)
        runs = [(spec, {**origin, "parent_experiment_id": _parent_of(spec, current)}) for spec in specs]
        done, bad = _run_jobs(executor=executor, model=model, data=data, runs=runs, options=options,
                              timeout=timeout, on_progress=report.stage(key), stage=name, book=book,
                              search_id=search_id)
        ran.extend(done)
        failed.extend(bad)

    try:
        report(0.0, "Looking for the uniform settings this model has no result for")
        stage(missing_configs(configs=configs, records=_judged(store, model)), "uniform settings",
              "uniform settings")
        if goal.objective == "size" and mixed_precision:
            report(STAGES["sensitivity"], "Sensitivity: reading the cache or probing each layer")
            from core.progress import Progress

            sensitivity, note = ensure_sensitivity(model=model, data=data, home=store.home,
                                                   progress=Progress(report.stage("sensitivity")))
            if sensitivity is not None:
                mixed, note = mixed_precision_specs(sensitivity=sensitivity, goal=goal)
                stage(missing_configs(configs=mixed, records=_judged(store, model)),
                      "mixed-precision candidates", "mixed-precision candidates")
            if note:
                notes.append(note)
        elif goal.objective == "latency":
            notes.append("mixed precision not run: palettized / low-bit weights are decompressed at run time, so "
                         "recipes trade bytes for accuracy, not speed")
        rounds = REFINE_ROUNDS if goal.refine else 0
        for round_number in range(1, rounds + 1):
            records = store.list(model=model.source_id)
            refinements = missing_configs(configs=refinement_specs(records, goal=goal), records=_judged(store, model))
            if not refinements:
                break
            stage(refinements, f"layer-skip refinement, round {round_number}", "layer-skip refinement")
        result = pick_winner(store.list(model=model.source_id), goal=goal, ran=ran, failed=failed)
    except (SearchCancelled, Cancelled, KeyboardInterrupt):  # Ctrl-C of the CLI: its runs stop too
        book.cancel_jobs(search_id=search_id)
        book.update(search_id=search_id, state="cancelled", finished_at=time.time(), ran=ran, failed=failed,
                    notes=notes, message=f"Cancelled after {len(ran)} run(s); unfinished runs were cancelled")
        raise SearchCancelled(f"search #{search_id} cancelled") from None
    except Exception as exc:
        book.update(search_id=search_id, state="failed", finished_at=time.time(), ran=ran, failed=failed,
                    notes=notes, message="Failed", error=_one_line(exc))
        raise
    result = SearchResult(goal=result.goal, winner=result.winner, candidates=result.candidates,
                          ran_experiments=result.ran_experiments, failed_jobs=result.failed_jobs,
                          search_id=search_id, notes=tuple(notes))
    book.update(search_id=search_id, state="done", progress=1.0, finished_at=time.time(), updated_at=time.time(),
                message=f"Done: {len(ran)} new experiment(s)", ran=ran, failed=failed, notes=notes,
                winner_id=None if result.winner is None else int(result.winner["id"]), sentence=result.sentence)
    if on_progress is not None:
        on_progress(1.0, "done")
    return result


def _one_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return (text if isinstance(exc, ValueError) and text else f"{type(exc).__name__}: {text}")[:300]


def _parent_of(spec: dict, records: Sequence[dict]) -> int | None:
    """The experiment a refinement derives from: the same spec without overrides (None for a plain config)."""
    if not spec.get("overrides"):
        return None
    base = _key({k: v for k, v in spec.items() if k != "overrides"})
    for record in records:
        if record.get("spec") and not record["spec"].get("overrides") and _key(record["spec"]) == base:
            return int(record["id"])
    return None


# --------------------------------------------------------------------------- in a process of its own

_children: list[subprocess.Popen] = []  # search processes this process started (reaped, so none stays a zombie)


def _collect_children() -> None:
    for child in list(_children):
        if child.poll() is not None:
            _children.remove(child)


def _log_path(home: Path, search_id: int) -> Path:
    from core.paths import job_logs_dir

    return job_logs_dir(Path(home)) / f"search{int(search_id):06d}.log"


def start_search_process(
    *, home: Path | str, model: ModelRef, data: DataRef, goal: SearchGoal, options: dict | None = None,
    configs: Sequence[dict] | None = None,
) -> int:
    """Record a search and run it in a new process (``python -m core.explore.search``); returns the search id.

    The dashboard calls this: the process submits the runs as jobs, computes a missing sensitivity table itself
    (never in the dashboard's process), and writes its progress and winner into the ``SearchBook``, so any page,
    reload or session can follow it. A plain subprocess rather than multiprocessing's spawn, as for sensitivity.
    """
    from core.paths import PROJECT_ROOT

    book = SearchBook(home=home)
    search_id = book.create(model=model, data=data, goal=goal, options=dict(options or {}),
                            configs=list(configs) if configs is not None else None)
    log = _log_path(book.home, search_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TQDM_DISABLE", "1")
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "core.explore.search", "--home", str(book.home), "--search-id", str(search_id)],
            cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)  # its own session: a Ctrl-C of the dashboard does not kill a running search
    _children.append(process)
    from core.jobs.queue import this_host

    book.update(search_id=search_id, pid=process.pid, host=this_host())
    return search_id


def wait_for_search(*, search_id: int, home: Path | str | None = None, timeout: float = 3600.0,
                    poll: float = 0.5) -> SearchRun:
    """Block until search `search_id` has finished (or `timeout` s passed); returns its row then."""
    book = SearchBook(home=home)
    deadline = time.monotonic() + timeout
    while True:
        run = book.get(search_id=search_id)
        if run.finished or time.monotonic() > deadline:
            return run
        time.sleep(poll)


def main(argv: Sequence[str] | None = None) -> int:
    """The search process: run search `--search-id` of data folder `--home` to its end."""
    import argparse

    from core.jobs.executors import get_executor
    from core.progress import quiet_libraries

    parser = argparse.ArgumentParser(prog="python -m core.explore.search", description=main.__doc__)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--search-id", type=int, required=True)
    args = parser.parse_args(argv)
    quiet_libraries()
    book = SearchBook(home=args.home)
    run = book.get(search_id=args.search_id)
    try:
        run_search(executor=get_executor(home=args.home), model=run.model_ref, data=run.data_ref, goal=run.goal,
                   options=run.options, configs=run.configs or None, search_id=run.id)
    except SearchCancelled:
        return 0
    except Exception as exc:  # run_search has written the reason into the row; make sure of it
        if not book.get(search_id=run.id).finished:
            book.update(search_id=run.id, state="failed", finished_at=time.time(), message="Failed",
                        error=_one_line(exc))
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
