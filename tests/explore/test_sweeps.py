"""Sweeps: grids and their errors, layer checks, Pareto front, and a real 3-config sweep through worker processes."""

from __future__ import annotations

import pytest

from core.explore.charts import lineage_figure, lineage_frame, pareto_scatter_figure
from core.explore.sweeps import (
    PRESETS,
    CustomGrid,
    SweepBook,
    SweepError,
    SweepGrid,
    grid_from_json,
    pareto_mask,
    plan_sweep,
    preset_grid,
    resume_sweep,
    start_sweep,
    stop_sweep,
    sweep_results_frame,
    sweep_status,
    wait_for_sweep,
)
from core.jobs import DataRef, LocalExecutor, ModelRef
from core.store import ExperimentStore
from tests.explore.conftest import FAST_OPTIONS

# --------------------------------------------------------------------------- grids


def test_presets_expand_to_valid_distinct_specs() -> None:
    guide = preset_grid(name="coremltools ResNet50 guide table")
    weight_only = preset_grid(name="weight-only")
    granularity = preset_grid(name="int8-granularity")
    assert len(guide) == 13 and len(weight_only) == 25 and len(granularity) == 5
    assert set(PRESETS) == {guide.name, weight_only.name, granularity.name}
    assert sorted(granularity.summaries()) == [
        "PyTorch static int8 (x86 recipe), calibrated on 128 images",
        "PyTorch static int8 (x86 recipe), per-tensor weights, calibrated on 128 images",
        "int8 weight quantization, per channel, symmetric, data-free",
        "int8 weights and activations (W8A8), symmetric, calibrated on 128 images",
        "int8 weights and activations (W8A8), symmetric, per-tensor weights, calibrated on 128 images"]
    assert len(set(granularity.summaries())) == 5  # the two weight granularities are told apart by name
    assert sorted(c.get("per_channel") for c in granularity.configs if c["method"] == "torch_static") == [False, True]
    assert "fashion_mobilenet" in PRESETS[granularity.name]
    assert {c["method"] for c in guide.configs} == {"palettize", "prune", "quantize_activations", "torch_static",
                                                    "torch_dynamic"}
    assert {c["method"] for c in weight_only.configs} == {"palettize", "quantize_weights"}
    assert len({str(sorted(c.items())) for c in weight_only.configs}) == 25  # no duplicates
    assert "2-bit palettization, groups of 16 channels, data-free" in weight_only.summaries()
    assert len(set(weight_only.summaries())) == 25  # per-channel scale is named, not read as per-tensor
    assert "25 configs" in PRESETS[weight_only.name]
    # the weight-only exploration list: int8/int4 × sym/asym per channel; int4 per block 16/32/128 × sym/asym; palettize 8/6/4/3/2 × 3 forms
    quantized = [c for c in weight_only.configs if c["method"] == "quantize_weights"]
    assert sorted((c["dtype"], c["mode"]) for c in quantized if c["granularity"] == "per_channel") == [
        ("int4", "asymmetric"), ("int4", "symmetric"), ("int8", "asymmetric"), ("int8", "symmetric")]
    assert sorted((c["block_size"], c["mode"]) for c in quantized if c["granularity"] == "per_block") == [
        (16, "asymmetric"), (16, "symmetric"), (32, "asymmetric"), (32, "symmetric"), (128, "asymmetric"),
        (128, "symmetric")]
    palettized = [c for c in weight_only.configs if c["method"] == "palettize"]
    assert sorted({c["n_bits"] for c in palettized}) == [2, 3, 4, 6, 8] and len(palettized) == 15
    assert sum(c["enable_per_channel_scale"] for c in palettized) == 5
    assert sum(c["granularity"] == "per_grouped_channel" for c in palettized) == 5


def test_custom_grid_is_methods_times_ranges() -> None:
    grid = CustomGrid(methods=("palettize", "prune"), palettize_bits=(2, 4), palettize_group_sizes=(8,),
                      prune_sparsities=(0.5, 0.75)).grid()
    assert len(grid) == 2 * 2 + 2
    assert grid.configs[1] == {**grid.configs[1], "granularity": "per_grouped_channel", "group_size": 8}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: CustomGrid(methods=()), r"^methods: the grid is empty"),
        (lambda: SweepGrid(name="x", configs=()), r"^configs: the grid is empty"),
        (lambda: CustomGrid(palettize_group_sizes=(0,)), r"^palettize_group_sizes: a group size must be .* got 0"),
        (lambda: CustomGrid(palettize_bits=(4, 5)), r"^palettize_bits: 5 bits is not a palettization width"),
        (lambda: CustomGrid(methods=("quantize_weights",), quantize_block_sizes=(0,)), r"^quantize_block_sizes"),
        (lambda: grid_from_json(text='[{"method": "palettize", "group_size": 0}]'), r"^configs\[0\]: group_size"),
        (lambda: grid_from_json(text='[{"method": "palettize", "n_bits": 5}]'), r"^configs\[0\]: n_bits must be"),
        (lambda: grid_from_json(text="[]"), r"^configs: the grid is empty"),
        (lambda: grid_from_json(text="{nope"), r"^grid: not valid JSON"),
        (lambda: preset_grid(name="everything"), r"^preset: unknown preset 'everything'"),
    ],
)
def test_invalid_grids_each_say_what_is_wrong(make, message) -> None:
    with pytest.raises(SweepError, match=message):
        make()


def test_grid_json_forms_round_trip() -> None:
    listed = grid_from_json(text='[{"method": "palettize", "n_bits": 4}, {"method": "palettize", "n_bits": 4}]')
    assert len(listed) == 1  # duplicates collapse
    custom = grid_from_json(text='{"methods": ["prune"], "prune_sparsities": [0.5, 0.9]}')
    assert [c["target_sparsity"] for c in custom.configs] == [0.5, 0.9]
    assert SweepGrid.from_dict(custom.to_dict()) == custom


# --------------------------------------------------------------------------- layer checks


def test_layers_a_config_cannot_take_are_listed_with_the_reason(fashion_cnn) -> None:
    grid = SweepGrid(name="limits", configs=(
        {"method": "palettize", "n_bits": 4, "granularity": "per_grouped_channel", "group_size": 16},
        {"method": "quantize_weights", "dtype": "int4", "granularity": "per_block", "block_size": 4096},
        {"method": "quantize_weights"},
    ))
    plan = plan_sweep(model=fashion_cnn, grid=grid, eval_images=100)
    limits = plan.layer_exceptions[plan.layer_exceptions["limit"]]
    grouped = limits[limits["config"] == 0]
    assert list(grouped["layer"]) == ["classifier.4"]  # 10 output channels
    assert "output channels (10) not divisible by group_size 16" in grouped.iloc[0]["reason"]
    # block size 4096 fits no layer: skipped, and listed with why — never silently
    assert plan.runnable == (0, 2)
    assert plan.skipped[0]["config"] == 1 and "no layer can take it" in plan.skipped[0]["reason"]
    assert "block_size 4096" in plan.skipped[0]["reason"]
    # generic reasons (a tiny first conv below the weight threshold) are listed but not flagged as a limit
    generic = plan.layer_exceptions[~plan.layer_exceptions["limit"]]
    assert "features.0" in set(generic["layer"]) and generic["reason"].str.startswith("below weight_threshold").all()
    assert plan.estimated_seconds > 0 and plan.wall_seconds <= plan.estimated_seconds


# --------------------------------------------------------------------------- Pareto


def test_pareto_mask_keeps_only_undominated_points() -> None:
    import pandas as pd

    frame = pd.DataFrame({"size": [1.0, 2.0, 3.0, 2.5, None], "acc": [0.80, 0.90, 0.95, 0.85, 0.99]})
    assert list(pareto_mask(frame, x="size", y="acc")) == [True, True, True, False, False]
    fig = pareto_scatter_figure(frame.rename(columns={"size": "size_bytes", "acc": "accuracy_top1"})
                                .assign(method="palettize", spec_summary="x", experiment_id=range(5)))
    front = next(t for t in fig.data if t.name == "Pareto front")
    assert len(front.x) == 3 and sum(len(t.x) for t in fig.data if t.name != "Pareto front") == 4


# --------------------------------------------------------------------------- a real sweep


@pytest.mark.slow
def test_sweep_of_three_configs_ends_with_three_tagged_experiments(home, fashion_cnn) -> None:
    executor = LocalExecutor(home=home, max_workers=2)
    book = SweepBook(home=home)
    grid = SweepGrid(name="three", configs=(
        {"method": "quantize_weights"},
        {"method": "prune", "target_sparsity": 0.5},
        {"method": "palettize", "n_bits": 6, "granularity": "per_grouped_channel", "group_size": 16},
    ))
    plan = plan_sweep(model=fashion_cnn, grid=grid, eval_images=100, workers=2)
    model, data = ModelRef(kind="sample", name="fashion_cnn"), DataRef(kind="bundled")
    sweep_id = start_sweep(executor=executor, model=model, data=data, plan=plan, options=FAST_OPTIONS, book=book)

    # Stop at once, then resume: the configs that did not finish are resubmitted, the finished are not.
    stop_sweep(sweep_id=sweep_id, book=book)
    stopped = sweep_results_frame(sweep_id=sweep_id, book=book)
    assert set(stopped["state"]) <= {"cancelled", "running", "done"} and book.get(sweep_id=sweep_id).stopped
    wait_for_sweep(sweep_id=sweep_id, book=book, timeout=120, executor=executor)
    resubmitted = resume_sweep(sweep_id=sweep_id, executor=executor, book=book)
    assert 1 <= len(resubmitted) <= 3
    frame = wait_for_sweep(sweep_id=sweep_id, book=book, timeout=400, executor=executor)

    assert list(frame["state"]) == ["done"] * 3, frame[["state", "error"]]
    records = ExperimentStore(home).list(model="sample:fashion_cnn")
    tagged = [r for r in records if (r.get("origin") or {}).get("kind") == "sweep"
              and r["origin"]["id"] == sweep_id]
    assert len(tagged) == 3 and {r["id"] for r in tagged} == set(frame["experiment_id"].astype(int))
    assert sweep_status(frame).finished and frame["accuracy_top1"].notna().all()
    # export is off here: sizes are the per-layer theoretical bytes, and the frame says so
    assert (frame["size_bytes"] > 0).all() and set(frame["size_source"]) == {"theoretical"}
    # a fourth resume has nothing to do
    assert resume_sweep(sweep_id=sweep_id, executor=executor, book=book) == []

    # lineage: the map hangs the three under the sweep
    lineage = lineage_frame(records)
    assert set(lineage["origin_label"]) == {f"sweep #{sweep_id}: three"}
    tree = lineage_figure(lineage).data[0]
    assert list(tree.parents).count(f"origin:sweep #{sweep_id}: three") == 3
    # the scatter shows one point per finished config
    fig = pareto_scatter_figure(frame)
    assert sum(len(t.x) for t in fig.data if t.name != "Pareto front") == 3


def test_sweep_scatter_fits_the_useful_points_and_names_the_outlier() -> None:
    import pandas as pd

    frame = pd.DataFrame({
        "size_bytes": [4.8e6, 1.3e6, 0.9e6, 2.5e6, 0.5e6], "accuracy_top1": [0.93, 0.925, 0.90, 0.93, 0.10],
        "method": ["palettize", "palettize", "palettize", "prune", "prune"], "spec_summary": list("abcde"),
        "experiment_id": range(5),
    })
    fig = pareto_scatter_figure(frame, baseline_accuracy=0.933)
    low, high = fig.layout.yaxis.range
    assert low > 70 and high <= 100  # the useful points fill the axis; the 10 % point does not stretch it to 0
    notes = [a.text for a in fig.layout.annotations if a.text.startswith("▼")]
    assert notes == ["▼ 1 point below the axis: 10.0 % (drawn on the bottom edge)"]
    pruned = next(t for t in fig.data if t.name == "Pruning" or (t.marker.symbol is not None and "triangle-down" in t.marker.symbol))
    assert min(pruned.y) >= low  # drawn on the bottom edge, inside the axis
    assert list(fig.layout.xaxis.ticktext) == ["0.5 MB", "1 MB", "2 MB", "5 MB"]
    assert fig.layout.legend.y < 0 and not fig.layout.legend.title.text  # under the plot, away from the title
