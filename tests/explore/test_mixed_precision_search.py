"""The measured mixed-precision search on fashion_cnn: exact knapsack, measured greedy, spec round trip, real run."""

from __future__ import annotations

import itertools
import math

import pytest

from core.data import load_bundled_subset
from core.experiment_options import ExperimentOptions
from core.explore.mixed_precision import (
    RECIPE_SETTINGS,
    RecipeError,
    RecipeTarget,
    candidates_frame,
    run_recipe,
    snr_of_noise,
)
from core.explore.mixed_precision import path as solver_path
from core.explore.mp_search import (
    RecipeSearchConfig,
    measure,
    path,
    prepare_search,
    search_recipe,
    solve_budget,
)
from core.explore.sensitivity_charts import candidate_curve_figure
from core.jobs.origins import ORIGIN_KEYS
from core.specs import spec_from_dict
from core.store import ExperimentStore

CONFIG = RecipeSearchConfig(settings=("pal1", "pal2", "pal4", "pal8", "pal2_pcs", "pal2_g8"), calibration_images=200,
                            path_points=8)


@pytest.fixture(scope="module")
def dataset():
    return load_bundled_subset()


@pytest.fixture(scope="module")
def problem(fashion_cnn, dataset):
    return prepare_search(model=fashion_cnn, dataset=dataset, config=CONFIG)


def _uniform(problem, key):
    return problem.uniform(key)


def test_every_layer_gets_every_setting_it_can_take(problem) -> None:
    frame = problem.options_frame()
    assert list(dict.fromkeys(frame["layer"])) == problem.layers
    for name in problem.layers:
        keys = [o.key for o in problem.options[name]]
        assert keys[0] is None and problem.options[name][0].kl == 0.0
        if problem.options[name][0].bytes / 2 < CONFIG.small_layer_share * problem.weight_params:
            assert keys == [None, "pal8"], name  # a layer too small to matter: fp16 or the largest setting
            continue
        assert {"pal1", "pal2", "pal4", "pal8", "pal2_pcs", "pal2_g8"} <= set(keys), name
        by_key = {o.key: o for o in problem.options[name]}
        assert by_key["pal8"].kl < by_key["pal1"].kl, name  # 8-bit disturbs the outputs less than 1-bit
        assert by_key["pal8"].noise < by_key["pal1"].noise, name
        assert by_key["pal2"].bytes < by_key["pal4"].bytes < by_key["pal8"].bytes < by_key[None].bytes
        assert by_key["pal2_pcs"].bytes > by_key["pal2"].bytes  # the per-channel scales are counted
    assert sum(len(problem.options[name]) == 2 for name in problem.layers) == 2  # the first conv and the last Linear
    assert "training-pool" in problem.description


def test_knapsack_is_exact_against_brute_force(problem) -> None:
    keys = (None, "pal1", "pal2", "pal4", "pal8")
    budget = problem.size(_uniform(problem, "pal2")) * 1.4
    best = math.inf
    for combo in itertools.product(keys, repeat=len(problem.layers)):
        choices = dict(zip(problem.layers, combo, strict=True))
        if all(any(o.key == k for o in problem.options[n]) for n, k in choices.items()) and problem.size(choices) <= budget * 0.995:
            best = min(best, sum(problem.option(n, k).noise for n, k in choices.items()))
    limited = {n: [o for o in problem.options[n] if o.key in keys] for n in problem.layers}
    full, problem.options = problem.options, limited
    try:
        chosen = solve_budget(problem, budget_bytes=budget)
    finally:
        problem.options = full
    assert chosen is not None and problem.size(chosen) <= budget
    assert sum(problem.option(n, k).noise for n, k in chosen.items()) <= best + 1e-12
    assert solve_budget(problem, budget_bytes=problem.other_bytes + 1) is None


def test_path_is_the_candidate_curve(problem) -> None:
    candidates = path(problem)
    # the fast estimate's solver and noise model: the same options give the same curve
    assert [c.choices for c in candidates] == [c.choices for c in solver_path(problem, points=CONFIG.path_points)]
    snrs = [c.predicted_snr_db for c in candidates]
    assert snrs == sorted(snrs, reverse=True)
    noise = sum(problem.option(n, k).noise for n, k in candidates[1].choices)
    assert candidates[1].predicted_snr_db == pytest.approx(snr_of_noise(noise))
    sizes = [c.predicted_bytes for c in candidates]
    assert sizes == sorted(sizes, reverse=True) and len(candidates) >= 3
    assert candidates[0].predicted_bytes == pytest.approx(problem.fp16_bytes)
    assert all(c.predicted_drop is not None for c in candidates)
    figure = candidate_curve_figure(candidates_frame(candidates))
    assert len(figure.data[0].x) == len(candidates)


@pytest.mark.slow
def test_search_beats_uniform_2_bit_on_the_calibration_slice(problem) -> None:
    uniform = _uniform(problem, "pal2")
    budget = problem.size(uniform)
    result = search_recipe(problem=problem, target=RecipeTarget(kind="size_mb", value=budget / 1e6))
    chosen = result.chosen
    assert chosen.predicted_bytes <= budget
    assert chosen.calibration["noise"] <= measure(problem, uniform)["noise"]
    assert chosen.calibration["images"] == CONFIG.calibration_images
    # the spec says the same per-layer settings (granularity and scale included) and round-trips
    spec = spec_from_dict(chosen.spec.to_dict())
    assert spec == chosen.spec
    for name, key in chosen.choices:
        resolved = spec.resolve(name)
        if key is None:
            assert resolved is None
            continue
        want = RECIPE_SETTINGS[key].spec
        assert resolved.n_bits == want["n_bits"], name
        assert resolved.granularity == want.get("granularity", "per_tensor"), name
        assert resolved.enable_per_channel_scale == want.get("enable_per_channel_scale", False), name
    with pytest.raises(RecipeError, match="out of reach"):
        search_recipe(problem=problem, target=RecipeTarget(kind="size_mb", value=problem.smallest_bytes / 2e6))


@pytest.mark.slow
def test_max_drop_target_is_met_on_the_calibration_slice(problem) -> None:
    result = search_recipe(problem=problem, target=RecipeTarget(kind="max_drop", value=1.0))
    assert result.chosen.calibration["top1_drop"] * 100 <= 1.0
    assert result.chosen.predicted_bytes < problem.fp16_bytes


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"settings": ()}, "settings"), ({"settings": ("pal9",)}, "unknown"), ({"settings": ("pal2", "int8")}, "one method"),
    ({"calibration_images": 0}, "calibration_images"), ({"start_slack": 2}, "start_slack"),
])
def test_bad_search_configs_name_the_field(kwargs, match) -> None:
    with pytest.raises(RecipeError, match=match):
        RecipeSearchConfig(**kwargs)


@pytest.mark.slow
def test_searched_recipe_runs_as_a_real_mlpackage(problem, fashion_cnn, dataset, tmp_path) -> None:
    target = RecipeTarget(kind="bits_per_weight", value=3.0)
    chosen = search_recipe(problem=problem, target=target).chosen
    store = ExperimentStore(tmp_path / "studio")
    outcome = run_recipe(store=store, model=fashion_cnn, dataset=dataset, candidate=chosen, recipe_id="search-1",
                         options=ExperimentOptions(eval_limit=200, measure_latency=False, measure_memory=False))
    record = store.get(outcome["experiment_id"])
    assert record["artifact_path"].endswith(".mlpackage")
    assert outcome["theoretical_bytes"] == pytest.approx(chosen.predicted_bytes, rel=1e-6)
    assert abs(outcome["size_ratio"] - 1) <= 0.05, outcome
    assert record["bits_per_weight"] <= target.value
    assert set(record["origin"]) == set(ORIGIN_KEYS)
    assert record["origin"]["kind"] == "recipe" and record["origin"]["id"] == "search-1"
    with pytest.raises(RecipeError, match="origin"):
        run_recipe(store=store, model=fashion_cnn, dataset=dataset, candidate=chosen)
