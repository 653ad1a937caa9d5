"""Mixed-precision recipes on fashion_cnn: the fast estimate's candidate curve, targets, the spec round trip and a real .mlpackage run."""

from __future__ import annotations

import itertools

import pytest

from core.data import load_bundled_subset
from core.experiment_options import ExperimentOptions
from core.explore.mixed_precision import (
    RecipeError,
    RecipeTarget,
    candidates_frame,
    choose,
    mixed_precision_candidates,
    option_table,
    recipe_exports,
    run_recipe,
    snr_of_noise,
)
from core.explore.sensitivity import SETTINGS, SensitivityConfig, run_sensitivity
from core.explore.sensitivity_charts import candidate_curve_figure
from core.paths import cache_dir
from core.specs import spec_from_dict
from core.store import ExperimentStore

CONFIG = SensitivityConfig(settings=("pal2", "pal4", "pal8"), eval_limit=200)


@pytest.fixture(scope="module")
def dataset():
    return load_bundled_subset()


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    return tmp_path_factory.mktemp("studio")


@pytest.fixture(scope="module")
def sensitivity(fashion_cnn, dataset, studio):
    return run_sensitivity(model=fashion_cnn, dataset=dataset, config=CONFIG, cache_root=cache_dir(studio))


@pytest.fixture(scope="module")
def candidates(sensitivity):
    return mixed_precision_candidates(sensitivity=sensitivity)


def test_candidate_curve_goes_from_fp16_to_all_2_bit(candidates, sensitivity) -> None:
    first, last = candidates[0], candidates[-1]
    assert all(s is None for _, s in first.choices) and all(s == "pal2" for _, s in last.choices)
    assert first.predicted_bytes == pytest.approx(sensitivity.meta["fp16_bytes"])
    sizes = [c.predicted_bytes for c in candidates]
    assert all(a > b for a, b in itertools.pairwise(sizes))
    snrs = [c.predicted_snr_db for c in candidates]
    assert all(a >= b for a, b in itertools.pairwise(snrs))
    assert all(c.predicted_drop is not None and c.predicted_drop >= 0 for c in candidates)
    assert len(candidates) >= 8  # dense enough for a size target to land near its budget
    frame = candidates_frame(candidates)
    assert len(candidate_curve_figure(frame).data[0].x) == len(candidates)


def test_overrides_round_trip_through_the_spec(candidates) -> None:
    for candidate in candidates[1:]:
        spec = candidate.spec
        again = spec_from_dict(spec.to_dict())
        assert again == spec
        for layer, key in candidate.choices:
            resolved = again.resolve(layer)
            if key is None:
                assert resolved is None, layer
            else:
                assert resolved.n_bits == SETTINGS[key].spec["n_bits"], layer


def test_run_label_says_the_recipe_is_mixed(candidates) -> None:
    mixed = next(c for c in candidates if len({key for _, key in c.choices}) > 1)
    label = mixed.summary
    assert label.startswith("mixed palettize, ") and f"{mixed.predicted_bits_per_weight:.2f} bits/weight" in label
    assert f"over {len(mixed.choices)} layers" in label and mixed.spec.summary() not in label


def test_targets_pick_the_least_compressed_candidate_that_meets_them(candidates) -> None:
    by_bits = choose(candidates=candidates, target=RecipeTarget(kind="bits_per_weight", value=4.5))
    assert by_bits.predicted_bits_per_weight <= 4.5
    earlier = [c for c in candidates if c.step < by_bits.step]
    assert all(c.predicted_bits_per_weight > 4.5 for c in earlier)
    by_mb = choose(candidates=candidates, target=RecipeTarget(kind="size_mb", value=by_bits.predicted_bytes / 1e6))
    assert by_mb.step == by_bits.step
    within = choose(candidates=candidates, target=RecipeTarget(kind="max_drop", value=100.0))
    assert within.step == candidates[-1].step
    with pytest.raises(RecipeError, match="out of reach"):
        choose(candidates=candidates, target=RecipeTarget(kind="size_mb", value=0.001))


@pytest.mark.parametrize(("kind", "value", "match"), [
    ("bits", 4, "target kind"), ("bits_per_weight", 0, "bits_per_weight"), ("size_mb", -1, "size_mb"),
    ("max_drop", 200, "max_drop"),
])
def test_bad_targets_name_the_problem(kind, value, match) -> None:
    with pytest.raises(RecipeError, match=match):
        RecipeTarget(kind=kind, value=value)


@pytest.mark.slow
def test_recipe_meets_its_size_target_as_a_real_mlpackage(candidates, sensitivity, fashion_cnn, dataset, studio) -> None:
    target = RecipeTarget(kind="bits_per_weight", value=4.5)
    chosen = choose(candidates=candidates, target=target)
    store = ExperimentStore(studio)
    outcome = run_recipe(store=store, model=fashion_cnn, dataset=dataset, candidate=chosen, sensitivity=sensitivity,
                         options=ExperimentOptions(eval_limit=200, measure_latency=False, measure_memory=False))
    record = store.get(outcome["experiment_id"])
    assert record["artifact_path"].endswith(".mlpackage")
    assert outcome["theoretical_bytes"] == pytest.approx(chosen.predicted_bytes, rel=1e-6)
    assert abs(outcome["size_ratio"] - 1) <= 0.05, outcome  # the real artifact within 5 % of the prediction
    assert record["bits_per_weight"] <= target.value
    bits = {layer["name"]: (layer["bits"] if layer["compressed"] else None) for layer in record["layers"]}
    expected = {layer: (SETTINGS[key].spec["n_bits"] if key else None) for layer, key in chosen.choices}
    assert bits == expected
    assert record["origin"]["kind"] == "recipe" and record["origin"]["id"] == sensitivity.meta["key"]


def test_each_candidate_has_the_least_noise_any_assignment_of_its_size_has(candidates, sensitivity) -> None:
    """The solver against brute force over every per-layer assignment of the probed settings."""
    table = option_table(sensitivity=sensitivity)
    keys = [[o.key for o in table.options[name]] for name in table.layers]
    everything = [dict(zip(table.layers, combo, strict=True)) for combo in itertools.product(*keys)]
    for candidate in candidates[1:-1]:
        noise = sum(table.option(n, k).noise for n, k in candidate.choices)
        assert candidate.predicted_snr_db == pytest.approx(snr_of_noise(noise))
        fits = [sum(table.option(n, k).noise for n, k in c.items()) for c in everything
                if table.size(c) <= candidate.predicted_bytes * 0.995]  # the solver rounds bytes up by ≤ 0.5 %
        assert noise <= min(fits) + 1e-12, candidate.step


def test_exports(candidates, fashion_cnn) -> None:
    chosen = choose(candidates=candidates, target=RecipeTarget(kind="bits_per_weight", value=4.5))
    exports = recipe_exports(candidate=chosen, model=fashion_cnn)
    assert "overrides" in exports["spec_yaml"] and "module_name_configs" in exports["coremltools_yaml"]
    compile(exports["python"], "recipe.py", "exec")


@pytest.mark.slow
def test_recipe_cli_writes_the_spec(tmp_path, monkeypatch, capsys) -> None:
    from core.cli import main

    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path))
    out_file = tmp_path / "recipe.yaml"
    code = main(["recipe", "--model", "sample:fashion_cnn", "--data", "bundled", "--settings", "pal2,pal4",
                 "--eval-limit", "100", "--target-bits", "3", "--spec-out", str(out_file), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "target ≤ 3 bits/weight" in out
    assert spec_from_dict(__import__("yaml").safe_load(out_file.read_text())).method == "palettize"
