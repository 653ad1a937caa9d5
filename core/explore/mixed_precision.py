"""Mixed-precision recipes: per-layer settings that meet a size or accuracy target — the one engine.

This module owns what both ways of choosing a recipe share:

* **the noise model**: each layer × setting adds output noise (noise power ÷ output power, 10^(−SNR/10)); noise
  powers of independently compressed layers add up, so a recipe's output SNR is predicted as −10·log10(Σ noise).
  Noise ranks settings rather than each probe's top-1 change because on ≤ 1,000 images one probe's top-1 change
  is a handful of images — too coarse to rank 6-bit against 8-bit — while the SNR moves smoothly. With labels,
  the accuracy drop is read off a monotone (isotonic) fit of each option's top-1 drop against its output SNR,
  evaluated at the combined SNR.
* **the solver** (``solve_budget``): for a byte budget, the per-layer settings with the least summed noise (a
  multiple-choice knapsack, exact by dynamic programming over bytes); ``path`` runs it over a series of budgets
  (the candidate curve).

The fast estimate (``mixed_precision_candidates``) feeds the solver the sensitivity table's probes
(``option_table``, the one adapter from a sensitivity table); the measured search (``core.explore.mp_search``)
feeds it options compressed and measured on a calibration slice, then refines by measuring whole recipes.

Sizes come from the size model (core.measure.size): each layer's stored bytes under its setting as probed, every
other float (biases, BatchNorm) as fp16. A recipe is one spec of a single method with per-layer overrides
(``"^<layer>$": {"n_bits": 3}`` or ``None`` = leave uncompressed); ``run_recipe`` runs it as a real experiment
(real .mlpackage) and reports predicted against measured.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.config_export import config_yaml, python_snippet
from core.data import Dataset
from core.experiment_options import ExperimentOptions
from core.explore.sensitivity import SETTINGS, ProbeSetting, SensitivityResult
from core.formatting import plural
from core.measure.quality import snr_db
from core.models.sources import LoadedModel
from core.progress import Progress
from core.specs import CompressionSpec, spec_from_dict

# Per-layer palettization settings a recipe may use beyond the sensitivity probes (coremltools takes n_bits 1, 2, 3,
# 4, 6, 8; a per-channel scale or grouped-channel LUTs cost a few bytes per channel / group and can recover accuracy
# at 2–3 bits; a LUT per output channel — group size 1 — costs 2^n fp16 values per channel, ~2.5 % more bytes at
# 2 bits on fashion_resnet, and took every-layer 2-bit there from −39 to −7.7 points on 2,000 images). Every field a
# palettize override sets is listed so that an override never inherits the base's granularity or scale by accident.
RECIPE_SETTINGS: dict[str, ProbeSetting] = {
    **SETTINGS,
    **{
        s.key: s
        for s in (
            ProbeSetting("pal1", "palettize 1-bit", {"method": "palettize", "n_bits": 1}),
            *(ProbeSetting(f"pal{b}_pcs", f"palettize {b}-bit + channel scale",
                           {"method": "palettize", "n_bits": b, "enable_per_channel_scale": True}) for b in (1, 2, 3, 4)),
            *(ProbeSetting(f"pal{b}_g{g}", f"palettize {b}-bit grouped {g}" if g > 1 else f"palettize {b}-bit, LUT per channel",
                           {"method": "palettize", "n_bits": b, "granularity": "per_grouped_channel", "group_size": g})
              for b in (1, 2, 3, 4) for g in (16, 8, 4, 1)),
        )
    },
}
_PALETTIZE_LAYER_DEFAULTS = {"n_bits": 4, "granularity": "per_tensor", "group_size": 16, "enable_per_channel_scale": False}


def setting_of(key: str) -> ProbeSetting:
    """The recipe setting under `key` (a sensitivity probe or one of RECIPE_SETTINGS); RecipeError when unknown."""
    try:
        return RECIPE_SETTINGS[key]
    except KeyError:
        raise RecipeError(f"unknown recipe setting {key!r}; known: {', '.join(RECIPE_SETTINGS)}.") from None


def setting_label(key: str | None) -> str:
    return "fp16" if key is None else setting_of(key).label


TARGET_KINDS = {
    "size_mb": "model size at most this many MB (10^6 bytes, theoretical)",
    "bits_per_weight": "average stored bits per weight at most this (LUTs and scales included)",
    "max_drop": "top-1 accuracy at most this many points below the baseline (predicted)",
}


class RecipeError(ValueError):
    """A recipe that cannot be built as asked; the message says why and what to try."""


@dataclass(frozen=True)
class RecipeTarget:
    """What the recipe must meet: a size (MB or bits per weight) or a maximum accuracy drop in points."""

    kind: str
    value: float

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise RecipeError(f"target kind must be one of {', '.join(TARGET_KINDS)}; got {self.kind!r}.")
        if isinstance(self.value, bool) or not isinstance(self.value, int | float) or not math.isfinite(self.value):
            raise RecipeError(f"target value must be a number; got {self.value!r}.")
        if self.kind == "size_mb" and self.value <= 0:
            raise RecipeError(f"size_mb must be positive; got {self.value}.")
        if self.kind == "bits_per_weight" and not 0 < self.value <= 16:
            raise RecipeError(f"bits_per_weight must be in (0, 16]; got {self.value}.")
        if self.kind == "max_drop" and not 0 <= self.value <= 100:
            raise RecipeError(f"max_drop is in accuracy points, between 0 and 100; got {self.value}.")

    def describe(self) -> str:
        return {"size_mb": f"≤ {self.value:g} MB", "bits_per_weight": f"≤ {self.value:g} bits/weight",
                "max_drop": f"≤ {plural(self.value, 'point')} below the baseline"}[self.kind]


@dataclass(frozen=True)
class Candidate:
    """One point of the candidate curve: per-layer settings, their spec and what the size model / fit predict."""

    step: int
    choices: tuple[tuple[str, str | None], ...]  # (layer, setting key or None = fp16), network order
    spec: CompressionSpec
    predicted_bytes: float  # whole model, theoretical (core.measure.size)
    predicted_bits_per_weight: float  # stored bits of the weight layers ÷ their weights
    predicted_snr_db: float  # combined output SNR (inf: nothing compressed)
    predicted_drop: float | None  # fraction (0.004 = 0.4 points); None without labels
    # measured on a calibration slice by core.explore.mp_search (kl, top1_drop, agreement, images); None: not measured
    calibration: dict | None = field(default=None, compare=False)

    @property
    def layer_settings(self) -> dict[str, str | None]:
        return dict(self.choices)

    @property
    def summary(self) -> str:
        """A label for the run of this recipe (its spec's own summary names only the base setting)."""
        kinds = len({key for _, key in self.choices})
        return (f"mixed {self.spec.method}, {self.predicted_bits_per_weight:.2f} bits/weight "
                f"({kinds} setting{'s' if kinds != 1 else ''} over {len(self.choices)} layers)")

    def row(self) -> dict:
        counts = Counter(setting_label(s) for _, s in self.choices)
        return {
            "step": self.step, "predicted_mb": self.predicted_bytes / 1e6, "predicted_bits_per_weight": self.predicted_bits_per_weight,
            "predicted_snr_db": self.predicted_snr_db,
            "predicted_drop_pts": None if self.predicted_drop is None else self.predicted_drop * 100,
            "calibration_drop_pts": None if not self.calibration or self.calibration.get("top1_drop") is None
            else self.calibration["top1_drop"] * 100,
            "layers": ", ".join(f"{n}× {label}" for label, n in counts.most_common()),
        }


# --------------------------------------------------------------------------- the noise model


def noise_of_snr(snr_db: float) -> float:
    """Output noise power ÷ output signal power of an output SNR (0 for +inf: identical outputs)."""
    if snr_db == math.inf or (isinstance(snr_db, float) and math.isnan(snr_db)):
        return 0.0
    return 10.0 ** (-snr_db / 10.0)


def snr_of_noise(noise: float) -> float:
    """The output SNR (dB) of a noise power ratio; +inf for no noise."""
    return math.inf if noise <= 0 else -10.0 * math.log10(noise)


def output_noise(*, reference, candidate) -> float:
    """The noise power ratio of `candidate` outputs against `reference` (core.measure.quality's SNR, as a power)."""
    return noise_of_snr(snr_db(reference=reference, candidate=candidate))


def fit_drop(snrs: np.ndarray, top1_changes: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(SNR, drop) knots of a non-increasing (isotonic) fit of top-1 drop against output SNR; None without data."""
    keep = np.isfinite(snrs) & ~np.isnan(top1_changes)
    if not keep.any():
        return None
    order = np.argsort(snrs[keep], kind="stable")
    x, y = snrs[keep][order], -top1_changes[keep][order]
    blocks: list[list[float]] = []  # [drop sum, count, snr sum]; pool adjacent violators
    for xi, yi in zip(x, y, strict=True):
        blocks.append([yi, 1.0, xi])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] < blocks[-1][0] / blocks[-1][1]:
            s, c, xs = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
            blocks[-1][2] += xs
    knots_x = np.array([b[2] / b[1] for b in blocks])
    knots_y = np.maximum(np.array([b[0] / b[1] for b in blocks]), 0.0)
    return knots_x, knots_y


def predict_drop(fit: tuple[np.ndarray, np.ndarray] | None, snr: float) -> float | None:
    """The fitted top-1 drop (fraction) at output SNR `snr`; None without a fit, 0 at +inf."""
    if fit is None:
        return None
    if snr == math.inf:
        return 0.0
    x, y = fit
    return float(np.interp(snr, x, y, left=y[0], right=y[-1]))


# --------------------------------------------------------------------------- the solver


@dataclass
class LayerOption:
    """One setting of one layer: its stored bytes and the output noise it adds alone (the solver's inputs).

    The measured search also keeps the KL divergence, the compressed module and its top-1 change alone."""

    key: str | None  # None: left uncompressed (fp16)
    bytes: float
    noise: float  # output noise power ÷ baseline output power (noise_of_snr of the output SNR)
    top1_change: float | None = None  # fraction, this layer alone; None without labels
    kl: float | None = None  # measured search: mean KL(baseline ‖ this) of the output distributions
    module: Any = field(default=None, repr=False)  # measured search: the compressed layer


@dataclass
class OptionTable:
    """Per layer, the settings it can take (fp16 first): what the one solver chooses from.

    Built from a sensitivity table (``option_table``: the fast estimate) or measured on a calibration slice
    (``core.explore.mp_search.prepare_search``). Noise powers of layers compressed together add up, so a choice's
    predicted output SNR is snr_of_noise(Σ noise)."""

    method: str
    workflow: str
    layers: list[str]
    options: dict[str, list[LayerOption]]
    other_bytes: float  # biases, BatchNorm: fp16
    weight_params: int
    drop_fit: tuple[np.ndarray, np.ndarray] | None

    @property
    def fp16_bytes(self) -> float:
        return sum(o[0].bytes for o in self.options.values()) + self.other_bytes

    @property
    def smallest_bytes(self) -> float:
        return sum(min(x.bytes for x in o) for o in self.options.values()) + self.other_bytes

    def option(self, layer: str, key: str | None) -> LayerOption:
        for o in self.options[layer]:
            if o.key == key:
                return o
        raise RecipeError(f"{layer} has no option {setting_label(key)!r} here "
                          f"(it has: {', '.join(setting_label(o.key) for o in self.options[layer])}).")

    def uniform(self, key: str) -> dict[str, str | None]:
        """Every layer at `key`; a layer without that option keeps its smallest one (tiny or indivisible layers)."""
        return {name: key if any(o.key == key for o in opts) else min(opts, key=lambda o: o.bytes).key
                for name, opts in self.options.items()}

    def smallest(self) -> dict[str, str | None]:
        """Every layer at its smallest option (the lower-noise one on a tie)."""
        return {name: min(opts, key=lambda o: (o.bytes, o.noise)).key for name, opts in self.options.items()}

    def size(self, choices: dict[str, str | None]) -> float:
        return sum(self.option(name, key).bytes for name, key in choices.items()) + self.other_bytes

    def options_frame(self) -> pd.DataFrame:
        """Per layer × setting: bytes, output SNR, KL and top-1 change alone (network order)."""
        rows = [{"layer": name, "setting": setting_label(o.key), "key": o.key, "bytes": o.bytes, "kl": o.kl,
                 "snr_db": snr_of_noise(o.noise),
                 "top1_change_pts": None if o.top1_change is None else o.top1_change * 100}
                for name in self.layers for o in self.options[name]]
        return pd.DataFrame(rows)


def _solvable(table: OptionTable, name: str, fixed: dict[str, str | None]) -> list[LayerOption]:
    return [o for o in table.options[name] if name not in fixed or o.key == fixed[name]]


def solve_budget(table: OptionTable, *, budget_bytes: float, fixed: dict[str, str | None] | None = None,
                 units: int = 4000) -> dict[str, str | None] | None:
    """Per-layer settings with the least summed output noise whose size is ≤ `budget_bytes` (None: impossible).

    A multiple-choice knapsack solved by dynamic programming over bytes: exact up to rounding every layer's bytes
    *up* to a unit of budget ÷ `units`, so the answer always fits. `fixed` pins some layers to one setting."""
    fixed = fixed or {}
    room = budget_bytes - table.other_bytes
    if room <= 0:
        return None
    unit = room / units
    best = np.full(units + 1, np.inf)
    best[0] = 0.0
    picks: list[np.ndarray] = []
    for name in table.layers:
        new = np.full(units + 1, np.inf)
        pick = np.full(units + 1, -1, dtype=np.int64)
        for i, o in enumerate(_solvable(table, name, fixed)):
            cost = math.ceil(o.bytes / unit - 1e-9)
            if cost > units:
                continue
            shifted = np.full(units + 1, np.inf)
            shifted[cost:] = best[: units + 1 - cost] + o.noise
            better = shifted < new
            new[better] = shifted[better]
            pick[better] = i
        picks.append(pick)
        best = new
        if not np.isfinite(best).any():
            return None
    end = int(np.argmin(best))
    if not np.isfinite(best[end]):
        return None
    choices: dict[str, str | None] = {}
    for name, pick in zip(reversed(table.layers), reversed(picks), strict=True):
        o = _solvable(table, name, fixed)[int(pick[end])]
        choices[name] = o.key
        end -= math.ceil(o.bytes / unit - 1e-9)
    return {name: choices[name] for name in table.layers}


def candidate_of(table: OptionTable, choices: dict[str, str | None], *, step: int,
                 calibration: dict | None = None) -> Candidate:
    """A Candidate (spec, size model bytes, noise model predictions) for per-layer `choices`."""
    opts = [table.option(name, key) for name, key in choices.items()]
    layer_bytes = sum(o.bytes for o in opts)
    snr = snr_of_noise(sum(o.noise for o in opts))
    return Candidate(step=step, choices=tuple(choices.items()),
                     spec=build_spec(method=table.method, choices=choices, workflow=table.workflow),
                     predicted_bytes=layer_bytes + table.other_bytes,
                     predicted_bits_per_weight=layer_bytes * 8.0 / table.weight_params, predicted_snr_db=snr,
                     predicted_drop=predict_drop(table.drop_fit, snr), calibration=calibration)


def path(table: OptionTable, *, points: int = 48) -> list[Candidate]:
    """The candidate curve: the solver's answers at `points` budgets from fp16 down to the smallest model, largest
    first; an answer neither smaller nor lower in noise than the one before it is left out."""
    fp16 = {name: None for name in table.layers}
    answers = [fp16]  # the solver rounds bytes up: fp16 and the smallest model are added as they are
    for budget in np.geomspace(table.fp16_bytes, table.smallest_bytes * 1.000001, points):
        choices = solve_budget(table, budget_bytes=float(budget))
        if choices is not None:
            answers.append(choices)
    answers.append(table.smallest())
    out: list[Candidate] = []
    for choices in answers:
        candidate = candidate_of(table, choices, step=len(out))
        if out and (candidate.predicted_bytes >= out[-1].predicted_bytes
                    or candidate.predicted_snr_db > out[-1].predicted_snr_db):
            continue
        out.append(candidate)
    return out


# --------------------------------------------------------------------------- the fast estimate


def recipe_methods(sensitivity: SensitivityResult) -> list[str]:
    """Methods a recipe can be built from (one method per recipe: a spec's overrides stay within its method)."""
    return list(dict.fromkeys(setting_of(s).method for s in sensitivity.frame["setting"].unique()))


def _layer_values(key: str, fields: set[str]) -> dict:
    """The override of setting `key`, with every field any chosen setting sets (palettize defaults filled in)."""
    setting = setting_of(key)
    values = dict(setting.layer_values)
    if setting.method == "palettize":
        for name in fields:
            values.setdefault(name, _PALETTIZE_LAYER_DEFAULTS.get(name))
    return values


def build_spec(*, method: str, choices: dict[str, str | None], workflow: str = "data_free") -> CompressionSpec:
    """One spec of `method`: the most common setting as its base, the rest as per-layer overrides (exact names);
    `workflow` is the whole spec's (data_free, or calibration: SKM's Fisher-weighted k-means for every layer)."""
    used = Counter(s for s in choices.values() if s is not None)
    base_key = used.most_common(1)[0][0] if used else next(k for k, s in SETTINGS.items() if s.method == method)
    fields = {name for key in used for name in setting_of(key).layer_values}
    overrides: dict[str, dict | None] = {}
    for layer, key in choices.items():
        if key != base_key:
            overrides[f"^{re.escape(layer)}$"] = None if key is None else _layer_values(key, fields)
    base = {"method": method, **_layer_values(base_key, fields)}
    spec = spec_from_dict({**base, "workflow": workflow, "weight_threshold": 0, "overrides": overrides})
    assert isinstance(spec, CompressionSpec)
    return spec


def option_table(
    *, sensitivity: SensitivityResult, method: str | None = None, settings: tuple[str, ...] | None = None
) -> OptionTable:
    """The solver's options read from a sensitivity table: each probe's bytes and output noise (its SNR as a power).

    `method` picks the family (default: palettize when probed, else the first probed method); `settings` limits
    the settings used (default: every probed setting of that method)."""
    frame = sensitivity.frame
    methods = recipe_methods(sensitivity)
    method = method or ("palettize" if "palettize" in methods else methods[0])
    if method not in methods:
        raise RecipeError(f"no probes of {method!r} in this sensitivity table; probed: {', '.join(methods)}.")
    keys = [k for k in (settings or tuple(frame["setting"].unique())) if k in RECIPE_SETTINGS and RECIPE_SETTINGS[k].method == method]
    probes = frame[frame["setting"].isin(keys) & frame["compressed"].astype(bool)]
    if probes.empty:
        raise RecipeError(f"no layer could be compressed with the chosen {method} settings.")
    layers = frame.drop_duplicates("layer").sort_values("order")
    labelled = sensitivity.has_labels
    options = {name: [LayerOption(key=None, bytes=float(b), noise=0.0, top1_change=0.0 if labelled else None)]
               for name, b in zip(layers["layer"], layers["layer_bytes_fp16"], strict=True)}
    for row in probes.itertuples(index=False):
        change = float(row.top1_change) if labelled and pd.notna(row.top1_change) else None
        options[row.layer].append(LayerOption(key=row.setting, bytes=float(row.layer_bytes),
                                              noise=noise_of_snr(float(row.snr_db)), top1_change=change))
    return OptionTable(method=method, workflow="data_free", layers=list(options), options=options,
                       other_bytes=(float(sensitivity.meta["float_params"]) - float(sensitivity.meta["weight_params"])) * 2.0,
                       weight_params=int(sensitivity.meta["weight_params"]),
                       drop_fit=drop_fit_of(options) if labelled else None)


def drop_fit_of(options: dict[str, list[LayerOption]]) -> tuple[np.ndarray, np.ndarray] | None:
    """The isotonic drop fit over every compressed option's (output SNR, top-1 change) alone."""
    alone = [o for opts in options.values() for o in opts if o.key is not None and o.top1_change is not None]
    if not alone:
        return None
    return fit_drop(np.array([snr_of_noise(o.noise) for o in alone], dtype=float),
                    np.array([o.top1_change for o in alone], dtype=float))


def mixed_precision_candidates(
    *, sensitivity: SensitivityResult, method: str | None = None, settings: tuple[str, ...] | None = None
) -> list[Candidate]:
    """The fast estimate: the solver's candidate curve over the sensitivity table's probes, from all-fp16 to every
    layer at its smallest setting (see ``option_table`` for `method` and `settings`)."""
    return path(option_table(sensitivity=sensitivity, method=method, settings=settings))


def choose(*, candidates: list[Candidate], target: RecipeTarget) -> Candidate:
    """The least-compressed candidate that meets a size target, or the smallest one within an accuracy drop."""
    if not candidates:
        raise RecipeError("no candidates: run the sensitivity analysis first.")
    if target.kind == "max_drop":
        if candidates[-1].predicted_drop is None:
            raise RecipeError("a maximum accuracy drop needs labelled data; this sensitivity used synthetic inputs. "
                              "Use a size target (MB or bits per weight) instead.")
        within = [c for c in candidates[1:] if c.predicted_drop is not None and c.predicted_drop * 100 <= target.value]
        if not within:
            raise RecipeError(f"even the first step is predicted to lose more than {plural(target.value, 'point')}; "
                              "allow a larger drop or probe gentler settings (6 / 8 bits).")
        return min(within, key=lambda c: (c.predicted_bytes, c.step))
    if target.kind == "size_mb":
        meets = [c for c in candidates if c.predicted_bytes <= target.value * 1e6]
        smallest = f"{candidates[-1].predicted_bytes / 1e6:.3f} MB"
    else:
        meets = [c for c in candidates if c.predicted_bits_per_weight <= target.value]
        smallest = f"{candidates[-1].predicted_bits_per_weight:.2f} bits/weight"
    if not meets:
        raise RecipeError(f"the target {target.describe()} is out of reach with these settings: the smallest "
                          f"candidate is {smallest}. Add smaller settings (2-bit) or relax the target.")
    return meets[0]


def candidates_frame(candidates: list[Candidate]) -> pd.DataFrame:
    return pd.DataFrame([c.row() for c in candidates])


def recipe_layers_frame(candidate: Candidate, sensitivity: SensitivityResult) -> pd.DataFrame:
    """Per layer: the chosen setting, its bytes and its probe SNR (network order)."""
    frame = sensitivity.frame
    rows = []
    for layer, key in candidate.choices:
        probe = frame[(frame["layer"] == layer) & (frame["setting"] == key)] if key else frame.iloc[0:0]
        first = frame[frame["layer"] == layer].iloc[0]
        snr = float(probe["snr_db"].iloc[0]) if len(probe) else math.inf
        rows.append({
            "layer": layer, "setting": setting_label(key) if key else "fp16 (uncompressed)", "params": int(first["params"]),
            "bytes": float(probe["layer_bytes"].iloc[0]) if len(probe) else float(first["layer_bytes_fp16"]),
            # output SNR with this layer alone at its setting (None: unchanged)
            "probe_snr_db": round(snr, 1) if math.isfinite(snr) else None,
        })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- export and the real run


def recipe_exports(*, candidate: Candidate, model: LoadedModel) -> dict[str, str]:
    """The recipe three ways: the spec (YAML with per-layer overrides), the coremltools config, a Python snippet."""
    from core.specs import spec_to_yaml

    return {
        "spec_yaml": spec_to_yaml(candidate.spec),
        "coremltools_yaml": config_yaml(candidate.spec, module=model.module),
        "python": python_snippet(spec=candidate.spec, source_id=model.source_id),
    }


def run_recipe(
    *,
    store,
    model: LoadedModel,
    dataset: Dataset | None,
    candidate: Candidate,
    sensitivity: SensitivityResult | None = None,
    recipe_id: str | None = None,
    options: ExperimentOptions | None = None,
    progress: Progress | None = None,
) -> dict:
    """Run the recipe as a real experiment (real .mlpackage) and save it; returns predicted vs measured.

    Its origin (core.jobs.origins shape) names the sensitivity table the recipe came from, or `recipe_id` (a
    measured search, core.explore.mp_search)."""
    from core.runs import run_and_save

    origin = recipe_origin(candidate=candidate, sensitivity=sensitivity, recipe_id=recipe_id)

    def finalize(record: dict, _seconds: float) -> None:
        record["origin"] = origin

    record = run_and_save(store=store, model=model, spec=candidate.spec, dataset=dataset, options=options,
                          progress=progress, staging_prefix="recipe_", finalize=finalize)
    return compare_prediction(candidate=candidate, record=record)


def recipe_origin(*, candidate: Candidate, sensitivity: SensitivityResult | None = None, recipe_id: str | None = None) -> dict:
    """The lineage of a recipe run in core.jobs.origins' shape {kind, id, parent_experiment_id, label}: the
    sensitivity table (or search) it came from and its step."""
    from core.jobs.origins import check_origin

    if recipe_id is None and sensitivity is None:
        raise RecipeError("a recipe's origin needs the sensitivity table or the search id it came from.")
    identifier = recipe_id if recipe_id is not None else str(sensitivity.meta.get("key"))  # type: ignore[union-attr]
    label = f"mixed precision step {candidate.step}" if candidate.calibration is None else "mixed precision (measured search)"
    return check_origin({"kind": "recipe", "id": identifier, "parent_experiment_id": None, "label": label})


def compare_prediction(*, candidate: Candidate, record: dict) -> dict:
    """Predicted (size model, SNR fit) against what the real experiment measured."""
    size = record.get("size_bytes")
    top1, base = record.get("accuracy_top1"), record.get("baseline_accuracy_top1")
    measured_drop = (base - top1) if isinstance(top1, int | float) and isinstance(base, int | float) else None
    return {
        "experiment_id": record.get("id"),
        "step": candidate.step,
        "predicted_bytes": candidate.predicted_bytes,
        "measured_bytes": size,
        "size_ratio": (size / candidate.predicted_bytes) if size else None,
        "theoretical_bytes": record.get("theoretical_size_bytes"),
        "predicted_snr_db": candidate.predicted_snr_db,
        "measured_snr_db": record.get("output_snr_db"),
        "predicted_drop": candidate.predicted_drop,
        "measured_drop": measured_drop,
        "bits_per_weight": record.get("bits_per_weight"),
        "artifact_path": record.get("artifact_path"),
    }


__all__ = [
    "RECIPE_SETTINGS",
    "TARGET_KINDS",
    "Candidate",
    "LayerOption",
    "OptionTable",
    "RecipeError",
    "RecipeTarget",
    "build_spec",
    "candidate_of",
    "candidates_frame",
    "choose",
    "compare_prediction",
    "drop_fit_of",
    "fit_drop",
    "mixed_precision_candidates",
    "noise_of_snr",
    "option_table",
    "output_noise",
    "path",
    "predict_drop",
    "recipe_exports",
    "recipe_layers_frame",
    "recipe_methods",
    "recipe_origin",
    "run_recipe",
    "setting_label",
    "setting_of",
    "snr_of_noise",
    "solve_budget",
]
