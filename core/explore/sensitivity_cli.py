"""The ``sensitivity`` and ``recipe`` subcommands of ``python -m core.cli``.

    python -m core.cli sensitivity --model sample:fashion_resnet [--data auto] [--settings pal2,pal4,pal8,int8]
    python -m core.cli recipe --model sample:fashion_resnet --target-bits 3 [--run]
    python -m core.cli recipe --model sample:fashion_resnet --max-drop 1.0 --run --spec-out recipe.yaml
    python -m core.cli recipe --model sample:fashion_resnet --target-bits 3 --measured [--calibration-images 500]

``sensitivity`` prints the probes sorted most damaging first (a progress bar on stderr); ``recipe`` picks per-layer
settings from the (cached) sensitivity table and, with ``--run``, runs the recipe as a real experiment saved to the
store, printing predicted against measured. ``recipe --measured`` runs the measured search instead
(core.explore.recipe_runs: every layer × setting compressed and combinations measured on a calibration slice of
the training pool; minutes) and prints its candidate curve as a table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from core.cli_support import EXIT_DONE, EXIT_TARGET_MISSED, load_model, run_with_progress, write_json
from core.formatting import fmt_mb, fmt_num, fmt_pts
from core.jsonable import to_jsonable

DATA_CHOICES = ("auto", "bundled", "full", "none")


def _common(p: argparse.ArgumentParser) -> None:
    from core.explore.sensitivity import DEFAULT_SETTINGS, SETTINGS

    p.add_argument("--model", required=True, help="model source id, e.g. sample:fashion_resnet or torchvision:resnet18")
    p.add_argument("--weights", help="state_dict file for the architecture")
    p.add_argument("--data", default="auto", choices=DATA_CHOICES,
                   help="evaluation data: the model's own (auto), bundled, full, or none (synthetic inputs, SNR only)")
    p.add_argument("--settings", default=",".join(DEFAULT_SETTINGS),
                   help=f"comma-separated settings to probe (default {','.join(DEFAULT_SETTINGS)}); known: {','.join(SETTINGS)}")
    p.add_argument("--eval-limit", type=int, default=1000, help="class-balanced evaluation images, at most 1,000 (default 1,000)")
    p.add_argument("--synthetic-images", type=int, default=64, help="synthetic inputs when there is no dataset (default 64)")
    p.add_argument("--no-cache", action="store_true", help="recompute even when a cached table exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", help="write the result to this JSON file (sensitivity: the table rows; recipe: the "
                   "chosen recipe and, with --run, its experiment record)")


def add_sensitivity_commands(subparsers: Any) -> None:
    """Add `sensitivity` and `recipe` to the CLI's subparsers."""
    sens = subparsers.add_parser("sensitivity", help="per-layer sensitivity: each layer alone × each setting; prints a table")
    _common(sens)
    sens.add_argument("--sort", choices=("snr_db", "top1_change"), default="snr_db", help="sort key (default: output SNR)")
    sens.add_argument("--top", type=int, default=0, help="print only the N most damaging probes (default: all)")
    sens.add_argument("--csv", help="also write the full table to this CSV file")
    sens.set_defaults(func=cmd_sensitivity)

    recipe = subparsers.add_parser("recipe", help="mixed-precision recipe from the sensitivity table (a size or accuracy target)")
    _common(recipe)
    target = recipe.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-bits", type=float, help="average stored bits per weight at most this")
    target.add_argument("--target-mb", type=float, help="model size at most this many MB")
    target.add_argument("--max-drop", type=float, help="predicted top-1 drop at most this many points")
    recipe.add_argument("--method", help="method of the recipe (default: palettize when probed)")
    recipe.add_argument("--run", action="store_true", help="run the recipe as a real experiment and save it to the store")
    recipe.add_argument("--run-eval-limit", type=int, help="evaluation images of the real run (default: all)")
    recipe.add_argument("--spec-out", help="write the recipe spec (YAML, with per-layer overrides) to this file")
    measured = recipe.add_argument_group("measured search (--measured)")
    measured.add_argument("--measured", action="store_true",
                          help="measured search instead of the estimate from the sensitivity table: compresses every "
                          "layer × setting and measures combinations on a calibration slice (minutes); --settings, --method and "
                          "--eval-limit (the sensitivity table's) do not apply to it")
    measured.add_argument("--search-settings", help="comma-separated settings of one method for the measured search "
                          "(default: the search's own defaults)")
    measured.add_argument("--calibration-images", type=int, help="class-balanced training-pool images the measured "
                          "search measures on (default: the search's own default)")
    recipe.set_defaults(func=cmd_recipe)


def _sensitivity(args: argparse.Namespace):  # -> (model, dataset, SensitivityResult)
    from core.explore.sensitivity import SensitivityConfig, parse_settings, run_sensitivity
    from core.jobs.refs import DataRef, load_data_ref

    config = SensitivityConfig(settings=parse_settings(args.settings), eval_limit=args.eval_limit,
                               synthetic_images=args.synthetic_images)
    model = load_model(args.model, args.weights)
    dataset = load_data_ref(ref=DataRef(kind=args.data), model=model)
    result = run_with_progress(args, lambda progress: run_sensitivity(
        model=model, dataset=dataset, config=config, progress=progress, use_cache=not args.no_cache))
    return model, dataset, result


def sensitivity_text(frame, *, by: str = "snr_db", top: int = 0) -> str:
    """The sorted table as plain text."""
    from core.explore.sensitivity_charts import sensitivity_table

    table = sensitivity_table(frame, by=by)
    if top:
        table = table.head(top)
    header = f"{'layer':<24} {'setting':<17} {'SNR dB':>7} {'PSNR dB':>8} {'top-1 pts':>9} {'bits/w':>6} {'share %':>7}"
    lines = [header, "-" * len(header)]
    for row in table.itertuples(index=False):
        lines.append(f"{row.layer:<24} {row.setting:<17} {fmt_num(row[2], '.1f'):>7} {fmt_num(row[3], '.1f'):>8} "
                     f"{fmt_num(row[4], '+.2f'):>9} {fmt_num(row[6], '.2f'):>6} {fmt_num(row[8], '.2f'):>7}"
                     + (f"  ({row.note})" if row.note else ""))
    return "\n".join(lines)


def cmd_sensitivity(args: argparse.Namespace) -> int:
    _model, _dataset, result = _sensitivity(args)
    meta = result.meta
    cached = " (from the cache)" if result.from_cache else f" in {meta.get('seconds', 0):.0f} s"
    print(f"{meta['model_label']}: {meta['data']}{cached}")
    if meta.get("baseline_top1") is not None:
        print(f"baseline {meta['baseline_top1'] * 100:.2f} % on these same images; top-1 change is in points vs that")
    print(sensitivity_text(result.frame, by=args.sort, top=args.top))
    if args.csv:
        result.frame.to_csv(args.csv, index=False)
        print(f"table written to {args.csv}")
    write_json(args.json, to_jsonable({"meta": result.meta, "from_cache": result.from_cache,
                                       "rows": result.frame.to_dict("records")}))
    return EXIT_DONE


def cmd_recipe(args: argparse.Namespace) -> int:
    from core.explore.mixed_precision import (
        RecipeError,
        RecipeTarget,
        candidates_frame,
        choose,
        mixed_precision_candidates,
        recipe_layers_frame,
    )

    if args.target_bits is not None:
        target = RecipeTarget(kind="bits_per_weight", value=args.target_bits)
    elif args.target_mb is not None:
        target = RecipeTarget(kind="size_mb", value=args.target_mb)
    else:
        target = RecipeTarget(kind="max_drop", value=args.max_drop)
    if args.measured:
        return _cmd_recipe_measured(args, target)
    model, dataset, sensitivity = _sensitivity(args)
    candidates = mixed_precision_candidates(sensitivity=sensitivity, method=args.method)
    try:
        chosen = choose(candidates=candidates, target=target)
    except RecipeError as exc:
        if target.kind == "max_drop" and candidates and candidates[-1].predicted_drop is None:
            raise  # bad input: an accuracy target without labelled data
        print(f"target missed: {exc}", file=sys.stderr)
        write_json(args.json, {"target": target.describe(), "chosen": None, "record": None})
        return EXIT_TARGET_MISSED
    row = candidates_frame([chosen]).iloc[0]
    drop = "n/a" if row["predicted_drop_pts"] is None else f"{row['predicted_drop_pts']:.2f} points"
    print(f"target {target.describe()}: step {chosen.step} of {len(candidates) - 1}, predicted {fmt_mb(chosen.predicted_bytes)}, "
          f"{chosen.predicted_bits_per_weight:.2f} bits/weight, output SNR {fmt_num(chosen.predicted_snr_db, '.1f', ' dB')}, "
          f"drop {drop}")
    for layer in recipe_layers_frame(chosen, sensitivity).itertuples(index=False):
        print(f"  {layer.layer:<24} {layer.setting:<20} {layer.bytes / 1e3:9.1f} kB")
    _write_and_run(args, chosen=chosen, model=model, dataset=dataset, recipe={"sensitivity": sensitivity},
                   compared_with=("predicted", chosen.predicted_drop), target=target)
    return EXIT_DONE


def _write_and_run(args: argparse.Namespace, *, chosen: Any, model: Any, dataset: Any, recipe: dict,
                   compared_with: tuple[str, float | None], target: Any) -> None:
    """--spec-out and --run for either recipe engine; `recipe`: run_recipe's engine-specific arguments (its
    sensitivity table or recipe id), `compared_with`: what the measured top-1 change is printed against."""
    from core.specs import spec_to_yaml

    if args.spec_out:
        Path(args.spec_out).write_text(spec_to_yaml(chosen.spec))
        print(f"spec written to {args.spec_out}")
    if not args.run:
        write_json(args.json, recipe_json(chosen=chosen, target=target, record=None))
        return
    from core.experiment_options import ExperimentOptions
    from core.explore.mixed_precision import run_recipe
    from core.store import ExperimentStore

    options = ExperimentOptions(eval_limit=args.run_eval_limit, measure_latency=False, measure_memory=False)
    outcome = run_with_progress(args, lambda progress: run_recipe(
        store=ExperimentStore(), model=model, dataset=dataset, candidate=chosen, options=options, progress=progress,
        **recipe))
    label, drop = compared_with
    print(f"experiment #{outcome['experiment_id']}: size {fmt_mb(outcome['measured_bytes'])} "
          f"(predicted {fmt_mb(outcome['predicted_bytes'])}, ×{fmt_num(outcome['size_ratio'], '.3f')}); "
          f"top-1 change {fmt_pts(-outcome['measured_drop'] if outcome['measured_drop'] is not None else None)} "
          f"({label} {fmt_pts(-drop if drop is not None else None)})")
    write_json(args.json, recipe_json(chosen=chosen, target=target,
                                      record=ExperimentStore().get(int(outcome["experiment_id"]))))


def recipe_json(*, chosen: Any, target: Any, record: dict | None) -> dict:
    """What `recipe --json` writes: the target, the chosen recipe (spec, per-layer settings, predictions) and, with
    --run, the experiment record of its real run (the store's schema)."""
    from core.explore.mixed_precision import candidates_frame

    row = candidates_frame([chosen]).iloc[0].to_dict()
    return to_jsonable({"target": target.describe(), "chosen": {**row, "spec": chosen.spec.to_dict(),
                                                                 "layer_settings": chosen.layer_settings},
                        "record": record})


def _search_request(args: argparse.Namespace, target: Any):  # -> MeasuredSearchRequest
    from core.explore.mixed_precision import RECIPE_SETTINGS
    from core.explore.mp_search import DEFAULT_SEARCH_SETTINGS, RecipeSearchConfig
    from core.explore.recipe_runs import MeasuredSearchRequest

    values: dict[str, Any] = {}
    if args.search_settings:
        values["settings"] = tuple(s.strip() for s in args.search_settings.split(",") if s.strip())
    else:  # the search's defaults that this version knows
        values["settings"] = tuple(s for s in DEFAULT_SEARCH_SETTINGS if s in RECIPE_SETTINGS)
    if args.calibration_images is not None:
        values["calibration_images"] = args.calibration_images
    return MeasuredSearchRequest(target=target, config=RecipeSearchConfig(**values))


def measured_text(result: Any) -> str:
    """The measured search's candidate curve as plain text, largest first (the chosen recipe marked with *)."""
    from core.explore.mixed_precision import candidates_frame

    chosen = result.chosen
    candidates = list(result.candidates)
    if not any(c.choices == chosen.choices for c in candidates):  # the greedy's answer is off the knapsack path
        candidates.append(chosen)
    candidates.sort(key=lambda c: -c.predicted_bytes)
    marks = ["*" if c.choices == chosen.choices else " " for c in candidates]
    header = f"  {'step':>4} {'MB':>8} {'bits/w':>6} {'pred. drop':>10} {'calib. drop':>11}  layers"
    lines = [header, "  " + "-" * (len(header) - 2)]
    for mark, row in zip(marks, candidates_frame(candidates).itertuples(index=False), strict=True):
        lines.append(f"{mark} {row.step:>4} {row.predicted_mb:8.4f} {row.predicted_bits_per_weight:6.2f} "
                     f"{fmt_num(row.predicted_drop_pts, '.2f'):>10} {fmt_num(row.calibration_drop_pts, '.2f'):>11}  {row.layers}")
    return "\n".join(lines)


def _cmd_recipe_measured(args: argparse.Namespace, target: Any) -> int:
    from core.explore.recipe_runs import measured_recipe
    from core.jobs.refs import DataRef, load_data_ref

    request = _search_request(args, target)
    model = load_model(args.model, args.weights)
    dataset = load_data_ref(ref=DataRef(kind=args.data), model=model)
    result = run_with_progress(args, lambda progress: measured_recipe(model=model, dataset=dataset, request=request,
                                                                       progress=progress))
    chosen = result.chosen
    drop = result.calibration_drop_pts()
    print(f"measured search ({result.seconds:.0f} s, {result.evaluations} recipes measured) on {result.calibration}")
    print(f"target {target.describe()}: {fmt_mb(chosen.predicted_bytes)}, {chosen.predicted_bits_per_weight:.2f} bits/weight, "
          f"calibration drop {fmt_num(drop, '.2f', ' points')}")
    print(measured_text(result))
    for layer in result.layers_frame().itertuples(index=False):
        print(f"  {layer.layer:<24} {layer.setting:<28} {layer.bytes / 1e3:9.1f} kB")
    _write_and_run(args, chosen=chosen, model=model, dataset=dataset,
                   recipe={"recipe_id": f"recipe-search-cli-{time.strftime('%Y%m%d-%H%M%S')}"},
                   compared_with=("calibration slice", drop), target=target)
    return EXIT_DONE
