"""The experiments a search chooses among, as a DataFrame, and the winner in words.

Pure functions of store records: the budget is judged on validation images (training pool), the test images only
confirm the choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from core.explore.search.goal import OBJECTIVES, SearchGoal
from core.formatting import as_number, fmt_num, fmt_size_ratio, plural

CANDIDATE_COLUMNS = ("id", "spec_summary", "method", "origin", "accuracy_top1", "baseline_accuracy_top1", "drop_pts",
                     "validation_drop_pts", "validation_images", "size_bytes", "compression_ratio_fp16",
                     "latency_ms_p50", "latency_ratio", "within_budget")


def config_label(record: dict) -> str:
    """The spec summary, saying when layers have their own settings (a recipe or a refinement)."""
    summary = str(record.get("spec_summary") or record.get("method"))
    overrides = (record.get("spec") or {}).get("overrides") or {}
    return f"{summary} + {len(overrides)} per-layer override(s)" if overrides else summary


def drop_pts(record: dict) -> float | None:
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


def size_of(record: dict) -> float | None:
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
        drop, chosen_on = drop_pts(record), validation_drop_pts(record)
        if chosen_on is None and not record.get("accuracy_meaningful", True):
            chosen_on = drop  # no labels at all: agreement with the baseline is all there is, on either set
        origin = (record.get("origin") or {}).get("kind") or "manual"
        rows.append({
            "id": record.get("id"), "spec_summary": config_label(record), "method": record.get("method"),
            "origin": origin, "accuracy_top1": record.get("accuracy_top1"),
            "baseline_accuracy_top1": record.get("baseline_accuracy_top1"), "drop_pts": drop,
            "validation_drop_pts": chosen_on, "validation_images": record.get("validation_images"),
            "size_bytes": size_of(record), "compression_ratio_fp16": record.get("compression_ratio_fp16"),
            "latency_ms_p50": record.get("latency_ms_p50"), "latency_ratio": record.get("latency_ratio"),
            "within_budget": chosen_on is not None and chosen_on <= goal.max_drop_pts + 1e-9,
        })
    frame = pd.DataFrame(rows, columns=list(CANDIDATE_COLUMNS))
    for column in ("accuracy_top1", "baseline_accuracy_top1", "drop_pts", "validation_drop_pts", "validation_images",
                   "size_bytes", "compression_ratio_fp16", "latency_ms_p50", "latency_ratio"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["within_budget"] = frame["within_budget"].astype(bool)
    return frame.sort_values([goal.column, "validation_drop_pts"], na_position="last").reset_index(drop=True)


def points_text(drop: float | None) -> str:
    if drop is None:
        return "accuracy not measured"
    if abs(drop) < 0.05:
        return "no accuracy lost (±0.0 points)"
    return f"{fmt_num(-drop, '+.1f')} points".replace("-", "−")


def chosen_and_confirmed(record: dict) -> str:
    """'chosen on 2,000 validation images: −0.6 points; confirmed on 10,000 test images: −0.8 points'."""
    validation, images = validation_drop_pts(record), as_number(record.get("validation_images"))
    test = drop_pts(record)
    confirmed = f"confirmed on {int(record.get('eval_images') or 0):,} test images: {points_text(test)}"
    if validation is None or images is None:
        return f"no validation images measured; on {int(record.get('eval_images') or 0):,} test images: {points_text(test)}"
    return f"chosen on {int(images):,} validation images: {points_text(validation)}; {confirmed}"


def stakeholder_sentence(record: dict, *, objective: str = "size") -> str:
    """'4.1× smaller, −0.4 points' (or '1.8× faster, …'): what a stakeholder needs to hear (test images)."""
    points = points_text(drop_pts(record))
    if objective == "latency":
        ratio = as_number(record.get("latency_ratio"))
        speed = "latency not measured" if ratio is None else (
            f"{fmt_num(1 / ratio, '.1f', '×')} faster" if ratio <= 1 else f"{fmt_num(ratio, '.1f', '×')} slower")
        return f"{speed}, {points}"
    ratio = as_number(record.get("compression_ratio_fp16"))
    if ratio is None:  # no exported artifact: the theoretical size against the fp32 weights, said as such
        fp32, size = as_number(record.get("size_fp32_bytes")), size_of(record)
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
