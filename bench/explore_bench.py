"""The Explore targets that sweeps and the budget search own, measured end to end through the job queue.

    .venv/bin/python -m bench.explore_bench            # weight-only sweep on fashion_resnet, 2,000 images; search
    .venv/bin/python -m bench.explore_bench --quick    # 5 configs, 500 images: a smoke run of the same path
    .venv/bin/python -m bench.explore_bench --only mixed   # just the mixed-precision targets (10,000 images)

1. The weight-only exploration sweep (25 configs, the weight-only exploration list) on ``fashion_resnet`` with 2,000
   evaluation images and real exported artifacts finishes in ≤ 5 min on 2 cores, with live progress (printed
   below as it runs). Latency and memory are not timed in the sweep (they would serialise the workers on the
   timing lock); the time is the wall time from the first submit to the last job finished, cold workers included.
2. The budget search "within 1 point, smallest" returns a model smaller than every uniform setting within 1 point
   (the uniform settings are the sweep's configs; the search adds mixed-precision candidates when
   ``core.explore.mixed_precision`` offers them, and layer-skip refinements).
3. Mixed precision beats uniform per-tensor palettization on ``fashion_resnet``, all 10,000 test images, real
   .mlpackage artifacts: (a) a recipe no larger than uniform 3-bit loses ≤ 0.3 points; (b) a recipe no larger than
   uniform 2-bit is ≥ 5 points more accurate than uniform 2-bit. The recipe comes from the measured search
   (``core.explore.mp_search``) on 500 class-balanced *training-pool* images; the test images only score it.

Numbers taken while other processes share the CPU are noisy: the table prints the machine's CPU count.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.tables import format_table
from core.formatting import fmt_bytes, fmt_seconds

SWEEP_TARGET_SECONDS = 300.0


_last_line: list[str] = [""]


def _say(line: str) -> None:
    """Live progress on stderr, one line per change."""
    if line != _last_line[0]:
        _last_line[0] = line
        print(f"  {time.strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)


def _progress(frame) -> None:
    from core.explore.sweeps import sweep_status

    status = sweep_status(frame)
    _say(f"sweep: {status.done} done, {status.running} running, {status.queued} queued, {status.failed} failed")


def _sensitivity(*, model, model_ref, data_ref, home: Path) -> float | None:
    """Per-layer sensitivity of the model (core.explore.sensitivity) into the data folder's cache; its seconds."""
    try:
        from core.explore.sensitivity import SensitivityConfig, run_sensitivity
    except ImportError:
        return None
    from core.jobs.refs import load_data_ref
    from core.paths import cache_dir

    dataset = load_data_ref(ref=data_ref, model=model)
    started = time.perf_counter()
    run_sensitivity(model=model, dataset=dataset, config=SensitivityConfig(), cache_root=cache_dir(home))
    seconds = time.perf_counter() - started
    _say(f"sensitivity: {fmt_seconds(seconds)}")
    return seconds


def run(*, home: Path, quick: bool, workers: int | None, eval_limit: int) -> list[dict]:
    from core.explore.search import SearchGoal, candidates_frame, run_search
    from core.explore.sweeps import SweepBook, SweepGrid, plan_sweep, preset_grid, start_sweep, wait_for_sweep
    from core.jobs import DataRef, LocalExecutor, ModelRef
    from core.jobs.refs import load_model_ref
    from core.store import ExperimentStore

    executor = LocalExecutor(home=home, max_workers=workers)
    book = SweepBook(home=home)
    model_ref, data_ref = ModelRef(kind="sample", name="fashion_resnet"), DataRef(kind="auto")
    grid = preset_grid(name="weight-only exploration")
    if quick:
        # int8, palettize 4 / 3 / 2-bit per tensor and 2-bit grouped 16: a budget edge the refinement can work on
        grid = SweepGrid(name=grid.name + " (quick)", configs=tuple(grid.configs[i] for i in (0, 16, 19, 22, 23)))
    model = load_model_ref(ref=model_ref)
    plan = plan_sweep(model=model, grid=grid, eval_images=eval_limit, workers=executor.max_workers)
    options = {"eval_limit": eval_limit, "measure_latency": False, "measure_memory": False, "export": True}
    print(f"{grid.name}: {len(plan.runnable)} configs on {model.label}, {executor.max_workers} workers, "
          f"estimated {fmt_seconds(plan.wall_seconds)}", file=sys.stderr)
    started = time.perf_counter()
    sweep_id = start_sweep(executor=executor, model=model_ref, data=data_ref, plan=plan, options=options, book=book)
    frame = wait_for_sweep(sweep_id=sweep_id, book=book, on_update=_progress, executor=executor, timeout=3600)
    sweep_seconds = time.perf_counter() - started
    done = int((frame["state"] == "done").sum())

    # The search also runs mixed-precision candidates when the model has sensitivity data (default probe settings,
    # cached in the data folder): measure it here as the page's Sensitivity tab would.
    sensitivity_seconds = _sensitivity(model=model, model_ref=model_ref, data_ref=data_ref, home=home)
    goal = SearchGoal(max_drop_pts=1.0, objective="size")
    started = time.perf_counter()
    result = run_search(executor=executor, model=model_ref, data=data_ref, goal=goal, options=options,
                        configs=grid.configs, on_progress=lambda f, m: _say(f"search: {m}"))
    search_seconds = time.perf_counter() - started
    records = ExperimentStore(home).list(model=model_ref.source_id)
    uniform = [r for r in records if (r.get("origin") or {}).get("kind") == "sweep"]
    within = candidates_frame(uniform, goal=goal)
    within = within[within["within_budget"]]
    smallest_uniform = float(within["size_bytes"].min()) if len(within) else None
    winner = result.winner
    winner_size = float(winner["size_bytes"]) if winner else None
    beats = winner is not None and smallest_uniform is not None and winner_size < smallest_uniform
    return [
        {"target": f"weight-only sweep, {len(plan.runnable)} configs, {eval_limit:,} images, real artifacts",
         "goal": f"≤ {fmt_seconds(SWEEP_TARGET_SECONDS)}", "measured": f"{fmt_seconds(sweep_seconds)} ({done} done)",
         "met": "yes" if sweep_seconds <= SWEEP_TARGET_SECONDS and done == len(plan.runnable) else "NO"},
        {"target": "budget search within 1 point, smallest",
         "goal": f"< every uniform within 1 pt ({fmt_bytes(smallest_uniform)})",
         "measured": f"{fmt_bytes(winner_size)}: {result.sentence} [{len(result.ran_experiments)} extra runs, "
                     f"{fmt_seconds(search_seconds)}]",
         "met": "yes" if beats else "NO"},
        {"target": "(input of the search) sensitivity, default probe settings", "goal": "(part 2's target)",
         "measured": fmt_seconds(sensitivity_seconds) if sensitivity_seconds is not None else "not available",
         "met": ""},
    ]


MIXED_TARGETS = ((3, 0.30, "loses ≤ 0.30 pts"), (2, 5.0, "≥ 5 pts above uniform 2-bit"))


def mixed_precision_rows(*, home: Path, quick: bool = False) -> list[dict]:
    """Target 3: recipes at the sizes of uniform 3-bit and 2-bit per-tensor palettization against those uniform runs.

    "No larger" is judged on the size model (the same rules for both; the artifacts are printed beside it and
    checked within 5 % of it)."""
    from core.data import load_fashion_mnist
    from core.experiment_options import ExperimentOptions
    from core.explore.mixed_precision import RecipeTarget, run_recipe
    from core.explore.mp_search import RecipeSearchConfig, prepare_search, search_recipe
    from core.measure.size import container_overhead_bytes
    from core.models.sources import load_model
    from core.progress import Progress
    from core.runs import run_and_save
    from core.specs import PalettizeSpec
    from core.store import ExperimentStore

    model, dataset = load_model("sample:fashion_resnet"), load_fashion_mnist()
    limit = 1000 if quick else None
    options = ExperimentOptions(eval_limit=limit, measure_latency=False, measure_memory=False)
    store = ExperimentStore(home)
    progress = Progress(callback=lambda fraction, message: _say(f"mixed precision: {message}"))
    started = time.perf_counter()
    problem = prepare_search(model=model, dataset=dataset, config=RecipeSearchConfig(), progress=progress)
    _say(f"mixed precision: {len(problem.layers)} layers × settings measured in {fmt_seconds(time.perf_counter() - started)}")
    rows = []
    for bits, goal_pts, goal in MIXED_TARGETS:
        uniform = run_and_save(store=store, model=model, spec=PalettizeSpec(n_bits=bits),
                               dataset=dataset, options=options)
        target = RecipeTarget(kind="size_mb", value=uniform["theoretical_size_bytes"] / 1e6)
        found = search_recipe(problem=problem, target=target, progress=progress)
        outcome = run_recipe(store=store, model=model, dataset=dataset, candidate=found.chosen,
                             recipe_id=f"bench-search-{bits}bit", options=options)
        recipe = store.get(outcome["experiment_id"])
        base = recipe["baseline_accuracy_top1"]
        recipe_drop = (base - recipe["accuracy_top1"]) * 100
        uniform_drop = (base - uniform["accuracy_top1"]) * 100
        no_larger = recipe["theoretical_size_bytes"] <= uniform["theoretical_size_bytes"]
        # the project's artifact check (core.measure.size.size_check): the weights file within ±5 % of the size
        # model once the container's fixed overhead (program, manifest, ~50 kB here) is set aside
        overhead = container_overhead_bytes(recipe["artifact_path"]) or 0
        weights_ratio = (recipe["size_bytes"] - overhead) / recipe["theoretical_size_bytes"]
        within_5 = abs(weights_ratio - 1) <= 0.05
        gain = uniform_drop - recipe_drop
        met = no_larger and within_5 and (recipe_drop <= goal_pts if bits == 3 else gain >= goal_pts)
        _say(f"mixed {bits}-bit: {found.log}")
        rows.append({
            "target": f"mixed precision ≤ uniform {bits}-bit per-tensor size, {recipe['eval_images']:,} test images",
            "goal": goal,
            "measured": f"recipe −{recipe_drop:.2f} pts at {fmt_bytes(recipe['theoretical_size_bytes'])} "
                        f"(artifact {fmt_bytes(recipe['size_bytes'])}, ×{outcome['size_ratio']:.3f} of predicted, weights "
                        f"×{weights_ratio:.3f} without {fmt_bytes(overhead)} container overhead); "
                        f"uniform −{uniform_drop:.2f} pts at {fmt_bytes(uniform['theoretical_size_bytes'])}"
                        + (f" (+{gain:.2f})" if bits == 2 else ""),
            "met": "yes" if met else "NO",
            "recipe": found.chosen.row()["layers"],
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 configs on 500 images (a smoke run)")
    parser.add_argument("--workers", type=int, help="worker processes (default: the job runner's default)")
    parser.add_argument("--eval-limit", type=int, help="evaluation images (default 2,000; --quick 500)")
    parser.add_argument("--home", help="data folder (default: a fresh temporary folder)")
    parser.add_argument("--only", choices=("sweep", "mixed"),
                        help="only the sweep + search targets, or only the mixed-precision targets")
    args = parser.parse_args(argv)
    eval_limit = args.eval_limit or (500 if args.quick else 2000)
    # Idle workers may still write their log while the folder is removed: cleanup errors are not the benchmark's.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        home = Path(args.home) if args.home else Path(tmp) / "studio"
        os.environ.setdefault("COMPRESSION_STUDIO_TIMING_LOCK", str(Path(tmp) / "timing.lock"))
        os.environ.setdefault("COMPRESSION_STUDIO_WORKER_IDLE", "5")
        rows = [] if args.only == "mixed" else run(home=home, quick=args.quick, workers=args.workers, eval_limit=eval_limit)
        if args.only != "sweep":
            mixed = mixed_precision_rows(home=home, quick=args.quick)
            for row in mixed:
                print(f"{row['target']}: {row['recipe']}")
            rows += mixed
    print(format_table(rows, [("target", "target"), ("goal", "goal"), ("measured", "measured"), ("met", "met")],
                       title=f"Explore targets — {os.cpu_count()} CPUs"))
    missed = [row["target"] for row in rows if row["met"] == "NO"]
    if missed and not args.quick:  # a smoke run is not held to the targets
        print(f"{len(missed)} target(s) missed: " + "; ".join(missed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
