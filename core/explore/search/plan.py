"""What a search runs: the grid configs a model lacks, mixed-precision candidates around the predicted recipe, and
layer-skip refinements of settings that broke the budget (Apple's exploration protocol)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from core.compress.registry import searchable_methods
from core.explore.search.candidates import candidates_frame
from core.explore.search.goal import SearchGoal
from core.formatting import as_number
from core.specs import SpecError, spec_from_dict

REFINE_LAYER_COUNTS = (1, 2, 4)  # how many sensitive layers a refinement run keeps at the safer setting
REFINE_ROUNDS = 2  # a refinement that becomes the winner can itself be beaten by refining a smaller setting
MIXED_STEPS = (-2, -1, 0, 1, 2)  # greedy-path steps around the recipe predicted to meet the budget


def refinable_methods() -> tuple[str, ...]:
    """The methods whose settings a layer-skip refinement can keep per layer (declared by each method's registration)."""
    return tuple(searchable_methods())


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
                       & frame["method"].isin(list(refinable_methods()))].sort_values("drop_pts")
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


def parent_of(spec: dict, records: Sequence[dict]) -> int | None:
    """The experiment a refinement derives from: the same spec without overrides (None for a plain config)."""
    if not spec.get("overrides"):
        return None
    base = _key({k: v for k, v in spec.items() if k != "overrides"})
    for record in records:
        if record.get("spec") and not record["spec"].get("overrides") and _key(record["spec"]) == base:
            return int(record["id"])
    return None
