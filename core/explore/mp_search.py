"""Measurement-guided mixed-precision search: per-layer settings chosen by what they do to the model's outputs.

``mixed_precision.mixed_precision_candidates`` ranks settings from the sensitivity table alone (arithmetic, fit
for the page). This module measures instead, and hands what it measures to the same solver and noise model
(``core.explore.mixed_precision``), in three stages on a fixed class-balanced **calibration slice of the
training pool** (never the evaluation images, so the reported accuracy is not tuned on):

1. ``prepare_search``: every weight layer × every setting of ``RecipeSearchConfig.settings`` (palettize 1–8 bits
   per tensor, with a per-channel scale, with a LUT per output channel or channel group) is compressed once by the
   same handler the real run uses (``sensitivity.compress_one_layer``) and kept in memory; its stored bytes come
   from the size model (LUTs and scales counted), and its effect alone is measured as output noise (the noise
   model's quantity, a smooth stand-in for top-1 on a small slice; the KL divergence is kept for display).
2. ``path``: for a byte budget, the settings minimising the summed single-layer noise exactly (the shared
   knapsack solver); at a series of budgets this is the candidate curve.
3. ``search_recipe``: from the knapsack answer at a slightly larger budget, layers are moved down greedily by
   *measured* noise added per byte saved (every move evaluated with the current recipe in place, re-running
   only the layers downstream of the moved one) until the budget is met; left-over bytes then buy the upgrade
   with the most measured noise removed per byte. The better of this and the plain knapsack answer (measured
   noise) wins.

A recipe stays one palettize spec with per-layer overrides (``mixed_precision.build_spec``).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn

from core.compress.applicability import graph_unavailable_reason
from core.compress.layers import weight_layers
from core.data import Dataset
from core.explore.mixed_precision import (
    RECIPE_SETTINGS,
    Candidate,
    LayerOption,
    OptionTable,
    RecipeError,
    RecipeTarget,
    candidate_of,
    drop_fit_of,
    output_noise,
    setting_label,
    solve_budget,
)
from core.explore.mixed_precision import path as solver_path
from core.explore.sensitivity import PartialForward, compress_one_layer
from core.formatting import plural
from core.measure.quality import collect_logits
from core.measure.size import float_param_count, layer_storage_bits
from core.models.sources import LoadedModel
from core.progress import Progress, as_progress, quiet_libraries

# Per-tensor LUTs at every width, plus the cheap refinements that matter at 1–3 bits: a LUT per output channel
# (group size 1) or per 4 channels, and a per-channel scale. At uniform-2-bit size on fashion_resnet the 1-bit LUT per
# channel is what lets a recipe pay for wider layers elsewhere (per-tensor 1-bit costs far more accuracy).
DEFAULT_SEARCH_SETTINGS = ("pal1", "pal2", "pal3", "pal4", "pal6", "pal8", "pal1_pcs", "pal2_pcs", "pal3_pcs",
                           "pal1_g1", "pal2_g1", "pal3_g1", "pal2_g4")


@dataclass(frozen=True)
class RecipeSearchConfig:
    """What the search measures and how hard it refines."""

    settings: tuple[str, ...] = DEFAULT_SEARCH_SETTINGS
    calibration_images: int = 500  # class-balanced, from the training pool (seeded); KL is smooth on a few hundred
    # layers holding less than this share of the weights get only fp16 and the largest setting: their bytes barely
    # move the size, and probing an early layer costs a whole forward pass per setting
    small_layer_share: float = 0.005
    seed: int = 0
    batch_size: int = 250
    start_slack: float = 0.08  # the greedy starts from the knapsack answer at budget × (1 + start_slack)
    path_points: int = 24  # budgets on the candidate curve
    # data_free: each layer's k-means alone (sensitivity.compress_one_layer); calibration: SKM's Fisher-weighted
    # k-means, one whole-model compression per setting (the Fisher information comes from the uncompressed model,
    # so each layer's result is the one a mixed recipe of the same workflow gets)
    workflow: str = "data_free"

    def __post_init__(self) -> None:
        if isinstance(self.settings, list):
            object.__setattr__(self, "settings", tuple(self.settings))
        if not isinstance(self.settings, tuple) or not self.settings:
            raise RecipeError("settings: choose at least one setting.")
        unknown = [s for s in self.settings if s not in RECIPE_SETTINGS]
        if unknown:
            raise RecipeError(f"settings: unknown {', '.join(map(str, unknown))}; choose from {', '.join(RECIPE_SETTINGS)}.")
        if len({RECIPE_SETTINGS[s].method for s in self.settings}) != 1:
            raise RecipeError("settings: a recipe is one method with per-layer overrides; choose settings of one method.")
        for name, value, low, high in (("calibration_images", self.calibration_images, 10, 10_000),
                                       ("batch_size", self.batch_size, 1, 4096), ("path_points", self.path_points, 2, 200),
                                       ("seed", self.seed, 0, 2**30 - 1)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise RecipeError(f"{name} must be an integer between {low} and {high}; got {value!r}.")
        if isinstance(self.small_layer_share, bool) or not isinstance(self.small_layer_share, int | float) or not 0 <= self.small_layer_share < 1:
            raise RecipeError(f"small_layer_share must be a number in [0, 1); got {self.small_layer_share!r}.")
        if self.workflow not in ("data_free", "calibration"):
            raise RecipeError(f"workflow must be 'data_free' or 'calibration'; got {self.workflow!r}.")
        if isinstance(self.start_slack, bool) or not isinstance(self.start_slack, int | float) or not 0 <= self.start_slack <= 1:
            raise RecipeError(f"start_slack must be a number between 0 and 1; got {self.start_slack!r}.")

    @property
    def method(self) -> str:
        return RECIPE_SETTINGS[self.settings[0]].method


@dataclass
class RecipeProblem(OptionTable):
    """Everything the search needs, computed once per model × calibration slice × settings: the solver's option
    table (measured options, each with its compressed module) plus the slice and the traced model."""

    model: LoadedModel
    config: RecipeSearchConfig
    batches: list[torch.Tensor]
    labels: torch.Tensor | None
    baseline: torch.Tensor
    baseline_top1: float | None
    description: str
    graph: PartialForward
    measured: dict[tuple, dict] = field(default_factory=dict)
    seconds: float = 0.0


def _kl(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    p = torch.log_softmax(reference.double(), dim=1)
    q = torch.log_softmax(candidate.double(), dim=1)
    return float((p.exp() * (p - q)).sum(dim=1).mean().clamp(min=0.0))


def _top1(logits: torch.Tensor, labels: torch.Tensor | None) -> float | None:
    return None if labels is None else float((logits.argmax(1) == labels).double().mean())


def prepare_search(
    *, model: LoadedModel, dataset: Dataset, config: RecipeSearchConfig | None = None, progress: Progress | None = None,
) -> RecipeProblem:
    """Compress every layer with every setting once and measure each alone on the calibration slice."""
    config = config or RecipeSearchConfig()
    progress = as_progress(progress)
    quiet_libraries()
    unavailable = graph_unavailable_reason(model=model)
    if unavailable:
        raise RecipeError(f"the recipe search needs real Conv/Linear layers: {unavailable}.")
    if dataset is None:
        raise RecipeError("the recipe search measures accuracy on a calibration slice: choose a labelled dataset.")
    started = time.perf_counter()
    layers = weight_layers(model.module)
    if not layers:
        raise RecipeError(f"{model.label} has no weight layers (Conv/Linear) to compress.")
    split = dataset.calibration_split(size=config.calibration_images, seed=config.seed)
    batches = [x for x, _ in dataset.batches(split, batch_size=config.batch_size)]
    labels = split.labels.clone()
    progress.update(0.0, "Evaluating the baseline on the calibration slice")
    work = copy.deepcopy(model.module).eval()
    baseline = collect_logits(module=work, batches=batches).logits
    graph = PartialForward.build(work)
    options: dict[str, list[LayerOption]] = {}
    base_top1 = _top1(baseline, labels)
    total_weights = sum(int(layer.weight.numel()) for layer in layers.values())
    whole: dict = {}  # calibration workflow: setting → whole-model CompressionResult
    for index, (name, layer) in enumerate(layers.items()):
        span = (index / len(layers), (index + 1) / len(layers))
        fp16 = LayerOption(key=None, bytes=layer.weight.numel() * 2.0, kl=0.0, noise=0.0,
                           top1_change=0.0 if labels is not None else None)
        found: dict[str, tuple[float, nn.Module]] = {}
        small = layer.weight.numel() < config.small_layer_share * total_weights
        keys = [max(config.settings, key=lambda k: RECIPE_SETTINGS[k].spec.get("n_bits", 16))] if small else config.settings
        for key in keys:
            progress.update(span[0] + 0.3 * (span[1] - span[0]) * len(found) / len(config.settings),
                            f"Compressing {name} with {setting_label(key)}")
            if config.workflow == "calibration":
                result = whole.get(key) or whole.setdefault(key, _whole_model(model, dataset, key))
                report = next(r for r in result.layers if r.name == name)
            else:
                result = compress_one_layer(model=model, layer_name=name, setting=RECIPE_SETTINGS[key])
                report = result.layers[0]
            if report.compressed:  # a setting the layer cannot take (group size vs channels) is not an option
                found[key] = (sum(layer_storage_bits(report).values()) / 8.0, result.module.get_submodule(name))
        outputs = graph.outputs(layer_name=name, replacements={k: m for k, (_, m) in found.items()}, batches=batches,
                                progress=progress.sub(span[0] + 0.3 * (span[1] - span[0]), span[1]),
                                label=f"Measuring {name} × {len(found)} settings")
        options[name] = [fp16] + [
            LayerOption(key=key, bytes=size, kl=_kl(baseline, outputs[key]),
                        noise=output_noise(reference=baseline, candidate=outputs[key]),
                        top1_change=None if labels is None else _top1(outputs[key], labels) - base_top1, module=module)
            for key, (size, module) in found.items()
        ]
    weight_params = int(sum(int(layer.weight.numel()) for layer in layers.values()))
    return RecipeProblem(
        method=config.method, workflow=config.workflow, model=model, config=config, layers=list(layers), options=options,
        other_bytes=(float_param_count(model.module) - weight_params) * 2.0, weight_params=weight_params,
        batches=batches, labels=labels, baseline=baseline, baseline_top1=base_top1,
        description=f"{dataset.name}: {len(split):,} class-balanced training-pool images (seed {config.seed}), "
                    "not the evaluation images",
        graph=graph, drop_fit=drop_fit_of(options) if labels is not None else None,
        seconds=time.perf_counter() - started,
    )


def _whole_model(model: LoadedModel, dataset: Dataset, key: str):
    """Every layer compressed with setting `key` by the calibration workflow (SKM) — the same sensitivities and
    per-layer k-means a recipe of that workflow runs."""
    from core.compress import compress
    from core.specs import spec_from_dict

    spec = spec_from_dict({**RECIPE_SETTINGS[key].spec, "workflow": "calibration", "weight_threshold": 0})
    return compress(model=model, spec=spec, dataset=dataset)


# --------------------------------------------------------------------------- the candidate curve


def path(problem: RecipeProblem) -> list[Candidate]:
    """The solver's answers from fp16 to the smallest model (the candidate curve), largest first, distinct."""
    return solver_path(problem, points=problem.config.path_points)


# --------------------------------------------------------------------------- measured evaluation and the greedy


def _apply(problem: RecipeProblem, choices: dict[str, str | None]) -> None:
    """Swap the chosen compressed layers into the search's working model (the traced graph's modules)."""
    graph = problem.graph.graph_module or problem.graph.module
    for name, key in choices.items():
        option = problem.option(name, key)
        original = problem.options[name][0]
        if original.module is None:  # keep the uncompressed layer to swap back in
            original.module = graph.get_submodule(name)
        graph.set_submodule(name, option.module if option.module is not None else original.module)


def _summary(problem: RecipeProblem, logits: torch.Tensor) -> dict:
    top1 = _top1(logits, problem.labels)
    return {"kl": _kl(problem.baseline, logits), "noise": output_noise(reference=problem.baseline, candidate=logits),
            "top1_drop": None if top1 is None or problem.baseline_top1 is None else problem.baseline_top1 - top1,
            "agreement": float((logits.argmax(1) == problem.baseline.argmax(1)).double().mean()),
            "images": len(logits)}


def measure(problem: RecipeProblem, choices: dict[str, str | None]) -> dict:
    """Output noise, KL, top-1 drop and agreement of a whole recipe on the calibration slice (cached per recipe)."""
    key = tuple(choices.items())
    if key not in problem.measured:
        _apply(problem, choices)
        graph = problem.graph.graph_module or problem.graph.module
        problem.measured[key] = _summary(problem, collect_logits(module=graph, batches=problem.batches).logits)
    return problem.measured[key]


def _frontier(options: list[LayerOption]) -> list[LayerOption]:
    """The layer's settings not beaten by another on both bytes and noise alone (smallest first)."""
    ordered = sorted(options, key=lambda o: (o.bytes, o.noise))
    out: list[LayerOption] = []
    for o in ordered:
        if not out or o.noise < out[-1].noise:
            out.append(o)
    return out


def _moves(problem: RecipeProblem, current: dict[str, str | None], *, down: bool, room: float) -> dict[str, list[LayerOption]]:
    """Per layer, the frontier settings one move away: the two nearest smaller ones (down; further jumps are
    reached by later steps) or the larger ones that fit in `room` bytes (up)."""
    out: dict[str, list[LayerOption]] = {}
    for name in problem.layers:
        now = problem.option(name, current[name])
        frontier = [o for o in _frontier(problem.options[name]) if o.key != now.key]
        if down:
            out[name] = [o for o in reversed(frontier) if o.bytes < now.bytes][:2]
        else:
            out[name] = [o for o in frontier if now.bytes < o.bytes <= now.bytes + room and o.noise < now.noise][:3]
    return {k: v for k, v in out.items() if v}


def _measure_moves(problem: RecipeProblem, current: dict[str, str | None], moves: dict[str, list[LayerOption]],
                   progress: Progress, label: str) -> list[tuple[str, LayerOption, dict]]:
    """Each move measured with the rest of `current` in place (only the layers downstream of the moved one run)."""
    _apply(problem, current)
    results = []
    for index, (name, opts) in enumerate(moves.items()):
        replacements = {o.key or "fp16": (o.module if o.module is not None else problem.options[name][0].module) for o in opts}
        outputs = problem.graph.outputs(layer_name=name, replacements=replacements, batches=problem.batches,
                                        progress=progress.sub(index / len(moves), (index + 1) / len(moves)), label=label)
        for o in opts:
            summary = _summary(problem, outputs[o.key or "fp16"])
            problem.measured[tuple({**current, name: o.key}.items())] = summary
            results.append((name, o, summary))
    _apply(problem, current)
    return results


@dataclass
class RecipeSearchResult:
    """The chosen recipe (measured on the calibration slice), the candidate curve and what was measured."""

    chosen: Candidate
    candidates: list[Candidate]
    target: RecipeTarget
    calibration: str
    evaluations: int
    log: list[str]
    seconds: float

    def layers_frame(self, problem: RecipeProblem) -> pd.DataFrame:
        rows = []
        for name, key in self.chosen.choices:
            o = problem.option(name, key)
            rows.append({"layer": name, "setting": setting_label(key) if key else "fp16 (uncompressed)",
                         "bytes": o.bytes, "kl_alone": o.kl,
                         "top1_change_alone_pts": None if o.top1_change is None else o.top1_change * 100})
        return pd.DataFrame(rows)


def _noise_text(summary: dict) -> str:
    noise = summary["noise"]
    return f"output SNR {-10 * math.log10(noise):.2f} dB, KL {summary['kl']:.5f}" if noise > 0 else "identical outputs"


def _budget(problem: RecipeProblem, target: RecipeTarget) -> float:
    if target.kind == "size_mb":
        return target.value * 1e6
    return target.value * problem.weight_params / 8.0 + problem.other_bytes


def _down_cost(problem: RecipeProblem, current: dict[str, str | None], item: tuple[str, LayerOption, dict], *,
               now: dict, excess: float) -> float:
    """Measured noise added per byte saved; a move that reaches the budget counts only the bytes still needed, so it
    is judged by its own loss rather than diluted by over-saving."""
    name, option, summary = item
    saved = min(problem.option(name, current[name]).bytes - option.bytes, max(excess, 1.0))
    return max(summary["noise"] - now["noise"], 0.0) / saved + 1e-12 * summary["noise"]


def search_recipe(*, problem: RecipeProblem, target: RecipeTarget, progress: Progress | None = None) -> RecipeSearchResult:
    """The recipe for `target`, refined by measured greedy moves (see the module docstring)."""
    progress = as_progress(progress)
    started = time.perf_counter()
    log: list[str] = []
    candidates = path(problem)
    if target.kind == "max_drop":
        chosen = _within_drop(problem, candidates, target, progress, log)
        return RecipeSearchResult(chosen=chosen, candidates=candidates, target=target, calibration=problem.description,
                                  evaluations=len(problem.measured), log=log, seconds=time.perf_counter() - started)
    budget = _budget(problem, target)
    if budget < problem.smallest_bytes:
        raise RecipeError(f"the target {target.describe()} is out of reach: the smallest recipe with these settings is "
                          f"{problem.smallest_bytes / 1e6:.3f} MB. Add smaller settings (1-bit) or relax the target.")
    plain = solve_budget(problem, budget_bytes=budget)
    assert plain is not None
    progress.update(0.0, "Measuring the knapsack recipe")
    plain_m = measure(problem, plain)
    log.append(f"knapsack at budget: {problem.size(plain) / 1e6:.4f} MB, {_noise_text(plain_m)}")
    current = solve_budget(problem, budget_bytes=budget * (1 + problem.config.start_slack)) or plain
    step = 0
    while problem.size(current) > budget:  # measured greedy downgrades until the budget is met
        step += 1
        now = measure(problem, current)
        moves = _moves(problem, current, down=True, room=0.0)
        if not moves:
            break
        results = _measure_moves(problem, current, moves, progress.sub(0.1, 0.8), f"Greedy step {step}: measuring moves")
        size_now = problem.size(current)

        name, o, summary = min(results, key=lambda item: _down_cost(problem, current, item, now=now, excess=size_now - budget))
        current = {**current, name: o.key}
        log.append(f"down {name} → {setting_label(o.key)}: {problem.size(current) / 1e6:.4f} MB, {_noise_text(summary)}")
    while True:  # spend the leftover on the best measured upgrade per byte
        room = budget - problem.size(current)
        moves = _moves(problem, current, down=False, room=room)
        if not moves:
            break
        now = measure(problem, current)
        results = _measure_moves(problem, current, moves, progress.sub(0.8, 0.95), "Spending the leftover bytes")
        gains = [((now["noise"] - s["noise"]) / (o.bytes - problem.option(n, current[n]).bytes), n, o, s) for n, o, s in results]
        gains = [g for g in gains if g[0] > 0]
        if not gains:
            break
        _, name, o, summary = max(gains, key=lambda g: g[0])
        current = {**current, name: o.key}
        log.append(f"up {name} → {setting_label(o.key)}: {problem.size(current) / 1e6:.4f} MB, {_noise_text(summary)}")
    greedy_m = measure(problem, current) if problem.size(current) <= budget else None
    if greedy_m is None or plain_m["noise"] < greedy_m["noise"]:
        current, final = plain, plain_m
        log.append("kept the knapsack recipe (lower measured output noise)")
    else:
        final = greedy_m
    progress.update(1.0, "Recipe chosen")
    chosen = candidate_of(problem, current, step=len(candidates), calibration=final)
    return RecipeSearchResult(chosen=chosen, candidates=candidates, target=target, calibration=problem.description,
                              evaluations=len(problem.measured), log=log, seconds=time.perf_counter() - started)


def _within_drop(problem: RecipeProblem, candidates: list[Candidate], target: RecipeTarget, progress: Progress,
                 log: list[str]) -> Candidate:
    """The smallest path candidate whose measured calibration drop is within the target (binary search by size)."""
    if problem.labels is None:
        raise RecipeError("a maximum accuracy drop needs labelled data; use a size target instead.")
    ordered = sorted(candidates, key=lambda c: -c.predicted_bytes)  # largest first
    lo, hi = 0, len(ordered) - 1
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        progress.update(0.5, f"Measuring candidate {ordered[mid].step}")
        m = measure(problem, dict(ordered[mid].choices))
        log.append(f"path step {ordered[mid].step}: {ordered[mid].predicted_bytes / 1e6:.4f} MB, drop {m['top1_drop'] * 100:.2f} pts")
        if m["top1_drop"] * 100 <= target.value:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    if best is None:
        raise RecipeError(f"no candidate is within {plural(target.value, 'point')} on the calibration slice; allow a larger drop.")
    c = ordered[best]
    return candidate_of(problem, dict(c.choices), step=c.step, calibration=measure(problem, dict(c.choices)))


__all__ = [
    "DEFAULT_SEARCH_SETTINGS",
    "LayerOption",
    "RecipeProblem",
    "RecipeSearchConfig",
    "RecipeSearchResult",
    "candidate_of",
    "measure",
    "path",
    "prepare_search",
    "search_recipe",
    "solve_budget",
]  # candidate_of, solve_budget and LayerOption are core.explore.mixed_precision's, re-exported
