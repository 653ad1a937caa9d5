"""`python -m core.cli sweep | search`: plans, clear refusals, a real one-config sweep and a search that reuses it."""

from __future__ import annotations

import pytest

from core.cli import main
from core.store import ExperimentStore


@pytest.mark.slow
def test_dry_run_prints_the_plan_with_layer_limits(home, capsys) -> None:
    grid = '{"methods": ["palettize"], "palettize_bits": [4], "palettize_group_sizes": [16]}'
    assert main(["sweep", "--model", "sample:fashion_cnn", "--grid", grid, "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "custom grid: 2 config(s), 2 runnable on fashion_cnn" in err and "estimated" in err
    assert "layer classifier.4 stays uncompressed — output channels (10) not divisible by group_size 16" in err


def test_bad_input_exits_2_naming_the_field(home, capsys) -> None:
    assert main(["sweep", "--model", "sample:fashion_cnn", "--grid", '{"methods": ["palettize"], '
                 '"palettize_bits": [5]}']) == 2
    assert "error: palettize_bits: 5 bits is not a palettization width" in capsys.readouterr().err
    assert main(["sweep", "--model", "sample:fashion_cnn", "--preset", "all of them"]) == 2
    assert "error: preset: unknown preset 'all of them'" in capsys.readouterr().err
    assert main(["sweep", "--model", "sample:fashion_cnn"]) == 2
    assert "--preset / --grid: give exactly one" in capsys.readouterr().err
    assert main(["search", "--model", "sample:fashion_cnn", "--max-drop", "-3"]) == 2
    assert "error: max_drop_pts must be" in capsys.readouterr().err


@pytest.mark.slow
def test_sweep_then_search_write_to_the_store_and_print_tables(home, capsys) -> None:
    fast = ["--eval-limit", "100", "--no-latency", "--no-export", "--data", "bundled", "--quiet", "--workers", "1"]
    grid = '[{"method": "quantize_weights"}]'
    assert main(["sweep", "--model", "sample:fashion_cnn", "--grid", grid, *fast]) == 0
    out = capsys.readouterr().out
    assert "sweep #1" in out and "int8 weight quantization, per channel, symmetric" in out and " done " in out
    [record] = ExperimentStore(home).list()
    assert record["origin"]["kind"] == "sweep" and record["origin"]["id"] == 1
    # measured on a class-balanced training-pool slice too (the bundled pool has 2,000 images): a winner among
    # sweep results is chosen there, never on the test images it is reported on
    assert record["validation_images"] == 2000 and record["eval_images"] == 100
    assert "Δ pts (validation)" in out and "Δ pts (test)" in out

    # The search runs only the config the model lacks (palettize 8-bit), tagged as the search's, then answers.
    grid = '[{"method": "quantize_weights"}, {"method": "palettize", "n_bits": 8}]'
    assert main(["search", "--model", "sample:fashion_cnn", "--max-drop", "5", "--no-refine", "--no-mixed", "--grid",
                 grid, *fast]) == 0
    out = capsys.readouterr().out
    assert out.startswith("search #1\n") and "smallest within 5 points" in out and "smaller than fp32 (theoretical size)" in out
    searched = [r for r in ExperimentStore(home).list() if r["origin"]["kind"] == "search"]
    assert [r["spec_summary"] for r in searched] == ["8-bit palettization, data-free"]
    assert searched[0]["origin"] == {"kind": "search", "id": 1, "parent_experiment_id": None,
                                     "label": "search #1: smallest within 5 pts"}
    assert "#1" in out and "#2" in out  # both candidates in the printed table
    winner_id = int(out.split("winner: experiment #", 1)[1].split(" ", 1)[0])
    winner = ExperimentStore(home).get(winner_id)
    chosen = (winner["baseline_validation_accuracy_top1"] - winner["validation_accuracy_top1"]) * 100
    confirmed = (winner["baseline_accuracy_top1"] - winner["accuracy_top1"]) * 100
    points = lambda drop: "no accuracy lost (±0.0 points)" if abs(drop) < 0.05 else f"{-drop:+.1f} points".replace("-", "−")  # noqa: E731
    assert (f"chosen on 2,000 validation images: {points(chosen)}; confirmed on 100 test images: {points(confirmed)}"
            in out)


def test_sweep_executor_flag_reaches_the_executor(home, capsys, monkeypatch) -> None:
    """`sweep --executor ray` asks Ray (here: no cluster at the address) instead of the local workers."""
    monkeypatch.setenv("COMPRESSION_STUDIO_RAY_ADDRESS", "127.0.0.1:9")
    grid = '[{"method": "quantize_weights"}]'
    code = main(["sweep", "--model", "sample:fashion_cnn", "--grid", grid, "--executor", "ray", "--quiet",
                 "--no-latency", "--no-export", "--data", "bundled"])
    assert code == 2
    assert "no Ray cluster is reachable at 127.0.0.1:9" in capsys.readouterr().err


@pytest.mark.slow
def test_recipe_measured_prints_the_curve_and_runs_the_chosen_recipe(home, tmp_path, capsys) -> None:
    spec_out = tmp_path / "recipe.yaml"
    assert main(["recipe", "--model", "sample:fashion_cnn", "--data", "bundled", "--target-bits", "4", "--measured",
                 "--search-settings", "pal2,pal4,pal8", "--calibration-images", "60", "--quiet", "--run",
                 "--run-eval-limit", "100", "--spec-out", str(spec_out)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("measured search (") and "on Fashion-MNIST: 60 class-balanced training-pool images" in out
    assert "target ≤ 4 bits/weight" in out and "calib. drop" in out
    assert sum(line.startswith("*") for line in out.splitlines()) == 1  # the chosen recipe, marked once
    assert "features.0" in out and "spec written to" in out and "overrides" in spec_out.read_text()
    [record] = ExperimentStore(home).list()
    assert f"experiment #{record['id']}" in out and record["bits_per_weight"] <= 4.0
    assert record["origin"]["kind"] == "recipe" and record["origin"]["id"].startswith("recipe-search-cli-")

    assert main(["recipe", "--model", "sample:fashion_cnn", "--target-bits", "4", "--measured",
                 "--search-settings", "pal4,int8"]) == 2
    assert "error: settings: a recipe is one method" in capsys.readouterr().err
