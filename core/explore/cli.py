"""The Explore subcommands of ``python -m core.cli``: ``sweep`` and ``search``.

    python -m core.cli sweep --model sample:fashion_cnn --preset weight-only --eval-limit 2000
    python -m core.cli sweep --model sample:fashion_cnn --grid '[{"method": "palettize", "n_bits": 4}]'
    python -m core.cli sweep --resume 3          # resubmit the configs of sweep #3 that did not finish
    python -m core.cli search --model sample:fashion_resnet --max-drop 1.0 --objective size

Runs are jobs (core.jobs): they end up as experiments in the store, tagged with their sweep / search. Ctrl-C
stops the sweep (its unfinished jobs are cancelled) and prints how to resume it. ``search`` works on a clean store:
it runs the preset's missing configs, the sensitivity table when none is cached (size objective), mixed-precision
candidates from it and refinements, then prints the candidates and the winner.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from typing import TYPE_CHECKING, Any

from core.cli_support import EXIT_CANCELLED, EXIT_DONE, EXIT_TARGET_MISSED, write_json
from core.formatting import fmt_mb, fmt_num, fmt_seconds
from core.jsonable import to_jsonable
from core.metrics import metrics_in

if TYPE_CHECKING:
    import pandas as pd

DATA_CHOICES = ("auto", "bundled", "full", "none")


class _Bar:
    """A tqdm bar on stderr for a number of finished runs (created lazily; off with --quiet)."""

    def __init__(self, *, total: int, enabled: bool, what: str) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=sys.stderr, disable=False, desc=what, leave=False,
                            bar_format="{n_fmt}/{total_fmt} {bar:30}| {desc} [{elapsed}]")

    def set(self, *, done: int, message: str) -> None:
        if self.bar is not None:
            self.bar.update(max(0, done - self.bar.n))
            self.bar.set_description_str(message[:60])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _options(args: argparse.Namespace) -> dict:
    options: dict[str, Any] = {}
    if args.eval_limit:
        options["eval_limit"] = int(args.eval_limit)
    if args.no_latency:
        options.update(measure_latency=False, measure_memory=False)
    if args.no_export:
        options["export"] = False
    return options


def _refs(args: argparse.Namespace) -> tuple[Any, Any]:
    from core.jobs.refs import DataRef, ModelRef

    return ModelRef.from_source_id(args.model, weights=args.weights), DataRef(kind=args.data)


def _executor(args: argparse.Namespace) -> Any:
    from core.jobs import get_executor

    return get_executor(name=getattr(args, "executor", None), max_workers=args.workers)


def _delta_pts(row: dict) -> float | None:
    if "accuracy_delta_pts" in row:
        return row["accuracy_delta_pts"]
    drop = row.get("drop_pts")
    return None if drop is None or math.isnan(drop) else -drop


def _validation_delta_pts(row: dict) -> float | None:
    """Δ points on the validation images (training pool): what a winner is chosen by."""
    if "validation_delta_pts" in row:
        return row["validation_delta_pts"]
    drop = row.get("validation_drop_pts")
    return None if drop is None or math.isnan(drop) else -drop


def results_table(frame: pd.DataFrame) -> str:
    """The sweep / search results as plain text: one line per config."""
    import pandas as pd

    if frame.empty:
        return "(no configs)"
    rows = []
    for row in frame.to_dict("records"):
        rows.append({
            "#": row.get("config", row.get("id")),
            "config": row.get("spec_summary"),
            "state": row.get("state", "done"),
            "exp": "" if pd.isna(row.get("experiment_id", row.get("id"))) else
            f"#{int(row.get('experiment_id', row.get('id')))}",
            # the metrics declared with the "cli" view (core.metrics), then the accuracy change on both image sets
            **{m.label: m.format(row.get(m.key)) for m in metrics_in("cli")},
            "Δ pts (test)": fmt_num(_delta_pts(row), "+.2f"),
            "Δ pts (validation)": fmt_num(_validation_delta_pts(row), "+.2f"),
            "note": str(row.get("error") or "")[:70],
        })
    return pd.DataFrame(rows).to_string(index=False)


def cmd_sweep(args: argparse.Namespace) -> int:
    from core.explore.sweeps import (
        PRESETS,
        SweepBook,
        SweepError,
        grid_from_json,
        plan_sweep,
        preset_grid,
        resume_sweep,
        start_sweep,
        stop_sweep,
        sweep_results_frame,
        sweep_status,
        wait_for_sweep,
    )

    if args.list_presets:
        for name, text in PRESETS.items():
            print(f"{name}: {text}")
        return 0
    executor = _executor(args)
    book = SweepBook(home=executor.queue.home)
    if args.stop is not None:
        print(f"sweep #{args.stop}: asked {stop_sweep(sweep_id=args.stop, book=book)} unfinished run(s) to stop.")
        return 0
    if args.resume is not None:
        sweep_id = args.resume
        new_jobs = resume_sweep(sweep_id=sweep_id, executor=executor, book=book)
        print(f"sweep #{sweep_id}: resubmitted {len(new_jobs)} config(s).", file=sys.stderr)
    else:
        if not args.model:
            raise SweepError("--model: give the model to sweep (e.g. sample:fashion_cnn).")
        if (args.preset is None) == (args.grid is None):
            raise SweepError("--preset / --grid: give exactly one (presets: " + ", ".join(PRESETS) + ").")
        grid = preset_grid(name=args.preset) if args.preset else grid_from_json(text=args.grid)
        model_ref, data_ref = _refs(args)
        from core.jobs.refs import load_model_ref

        model = load_model_ref(ref=model_ref)
        plan = plan_sweep(model=model, grid=grid, eval_images=args.eval_limit or 10_000,
                          workers=getattr(executor, "max_workers", 1))
        print(f"{grid.name}: {len(grid)} config(s), {len(plan.runnable)} runnable on {model.label}; estimated "
              f"{fmt_seconds(plan.wall_seconds)} with {plan.workers} worker(s) ({plan.basis}).", file=sys.stderr)
        for item in plan.skipped:
            print(f"  skipped config {item['config']} {item['summary']}: {item['reason']}", file=sys.stderr)
        limits = plan.layer_exceptions[plan.layer_exceptions["limit"]]
        for row in limits.itertuples():
            print(f"  config {row.config} {row.summary}: layer {row.layer} stays uncompressed — {row.reason}",
                  file=sys.stderr)
        if args.dry_run:
            write_json(args.json, plan_json(plan))
            return EXIT_DONE
        sweep_id = start_sweep(executor=executor, model=model_ref, data=data_ref, plan=plan, options=_options(args),
                               book=book)
        print(f"sweep #{sweep_id} started ({len(plan.runnable)} jobs).", file=sys.stderr)
    total = len(book.get(sweep_id=sweep_id).configs)
    bar = _Bar(total=total, enabled=not args.quiet, what=f"sweep #{sweep_id}")

    def update(frame: Any) -> None:
        status = sweep_status(frame)
        bar.set(done=status.done + status.failed + status.cancelled + status.skipped,
                message=f"{status.done} done, {status.running} running, {status.failed} failed")

    try:
        frame = wait_for_sweep(sweep_id=sweep_id, book=book, on_update=update, executor=executor,
                               timeout=args.timeout)
    except KeyboardInterrupt:
        bar.close()
        stop_sweep(sweep_id=sweep_id, book=book)
        print(f"stopped sweep #{sweep_id}; resume it with: python -m core.cli sweep --resume {sweep_id}",
              file=sys.stderr)
        return EXIT_CANCELLED
    bar.close()
    frame = sweep_results_frame(sweep_id=sweep_id, book=book)
    print(f"sweep #{sweep_id}")
    print(results_table(frame))
    write_json(args.json, sweep_json(sweep_id=sweep_id, frame=frame, home=book.home))
    status = sweep_status(frame)
    return EXIT_DONE if status.failed == 0 and status.finished else EXIT_TARGET_MISSED


def plan_json(plan: Any) -> dict:
    """What `sweep --dry-run --json` writes: the configs it would run, those it skips (with why), the estimate."""
    return to_jsonable({"sweep_id": None, "dry_run": True, "configs": [plan.grid.configs[i] for i in plan.runnable],
                        "skipped": list(plan.skipped), "estimated_wall_seconds": plan.wall_seconds})


def _store_records(home: Any, ids: Any) -> list[dict]:
    """The experiment records (the store's schema) of these ids, in order; ids that are missing or NaN skipped."""
    from core.store import ExperimentStore

    store = ExperimentStore(home)
    wanted = [int(i) for i in ids if i is not None and not (isinstance(i, float) and math.isnan(i))]
    return [store.get(i) for i in wanted]


def sweep_json(*, sweep_id: int, frame: pd.DataFrame, home: Any) -> dict:
    """What `sweep --json` writes: one row per config (state, error) and the experiment records it produced."""
    configs = frame.drop(columns=[c for c in ("progress", "message") if c in frame.columns]).to_dict("records")
    ids = frame["experiment_id"].tolist() if "experiment_id" in frame.columns else []
    return to_jsonable({"sweep_id": sweep_id, "configs": configs, "records": _store_records(home, ids)})


def cmd_search(args: argparse.Namespace) -> int:
    from core.explore.search import SearchCancelled, SearchGoal, run_search
    from core.explore.sweeps import grid_from_json, preset_grid

    goal = SearchGoal(max_drop_pts=args.max_drop, objective=args.objective, refine=not args.no_refine)
    model_ref, data_ref = _refs(args)
    executor = _executor(args)
    bar = _Bar(total=100, enabled=not args.quiet, what="search")
    configs = grid_from_json(text=args.grid).configs if args.grid else preset_grid(name=args.preset).configs
    try:
        # Runs what it needs: the grid's missing configs, the sensitivity table (size objective) when none is
        # cached, mixed-precision candidates from it, refinements — all but the sensitivity probes as jobs.
        result = run_search(executor=executor, model=model_ref, data=data_ref, goal=goal, options=_options(args),
                            configs=configs, timeout=args.timeout, mixed_precision=not args.no_mixed,
                            on_progress=lambda f, m: bar.set(done=round(f * 100), message=m))
    except SearchCancelled as exc:
        bar.close()
        print(f"{exc}; its unfinished runs were cancelled.", file=sys.stderr)
        return EXIT_CANCELLED
    finally:
        bar.close()
    frame = result.candidates.head(args.top)
    print(f"search #{result.search_id}")
    print(results_table(frame.assign(state=frame["within_budget"].map({True: "within", False: "over budget"}))))
    for reason in result.failed_jobs:
        print(f"  failed: {reason}", file=sys.stderr)
    for note in result.notes:
        print(f"  note: {note}", file=sys.stderr)
    print(result.sentence)
    if result.winner is not None:
        print(f"winner: experiment #{result.winner['id']} ({fmt_mb(result.winner.get('size_bytes'))}); artifact: "
              f"{result.winner.get('artifact_path') or 'not exported'}")
    write_json(args.json, search_json(result, home=executor.queue.home))
    return EXIT_DONE if result.winner is not None else EXIT_TARGET_MISSED


def search_json(result: Any, *, home: Any) -> dict:
    """What `search --json` writes: the goal, the winner's record (None: nothing within budget) and every
    candidate's record (the store's schema) with the search's verdict on it (within_budget, drop points)."""
    verdict_columns = [c for c in ("within_budget", "drop_pts", "validation_drop_pts") if c in result.candidates]
    verdicts = result.candidates[["id", *verdict_columns]].to_dict("records") if "id" in result.candidates else []
    records = {r["id"]: r for r in _store_records(home, [v["id"] for v in verdicts])}
    candidates = [{"search": {k: v for k, v in verdict.items() if k != "id"}, "record": records.get(int(verdict["id"]))}
                  for verdict in verdicts]
    winner = None if result.winner is None else records.get(int(result.winner["id"]), result.winner)
    return to_jsonable({"search_id": result.search_id, "goal": dataclasses.asdict(result.goal),
                        "winner": winner, "candidates": candidates, "sentence": result.sentence,
                        "notes": list(result.notes), "failed_jobs": list(result.failed_jobs)})


def _common(p: argparse.ArgumentParser, *, model_required: bool) -> None:
    p.add_argument("--model", required=model_required, help="source id, e.g. sample:fashion_resnet")
    p.add_argument("--weights", help="weights file (.pt/.pth weights-only, or .safetensors) for a sample, torchvision or timm architecture")
    p.add_argument("--data", default="auto", choices=DATA_CHOICES, help="evaluation data (default auto)")
    p.add_argument("--eval-limit", type=int, help="evaluate only the first N test images")
    p.add_argument("--no-latency", action="store_true", help="skip latency and memory measurements")
    p.add_argument("--no-export", action="store_true", help="skip the .mlpackage / TorchScript artifacts")
    p.add_argument("--workers", type=int, help="worker processes (default: $COMPRESSION_STUDIO_WORKERS or cores)")
    p.add_argument("--executor", choices=("local", "ray"),
                   help="where the jobs compute (default: $COMPRESSION_STUDIO_EXECUTOR or local)")
    p.add_argument("--timeout", type=float, default=3600.0, help="give up waiting after this many seconds")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", help="write the result to this JSON file (experiment records in the store's schema)")


def add_explore_commands(subparsers: Any) -> None:
    """Add `sweep` and `search` to the CLI (core.cli assembles the command sets)."""
    sweep = subparsers.add_parser("sweep", help="run many configs of one model as jobs; print the results table")
    _common(sweep, model_required=False)
    sweep.add_argument("--preset", help="a preset grid: 'weight-only' / 'guide' or its full name (--list-presets)")
    sweep.add_argument("--grid", help="JSON: a list of specs, {name, configs}, or a custom grid {methods, …}")
    sweep.add_argument("--resume", type=int, metavar="SWEEP_ID", help="resubmit the unfinished configs of a sweep")
    sweep.add_argument("--stop", type=int, metavar="SWEEP_ID", help="cancel the unfinished runs of a sweep")
    sweep.add_argument("--dry-run", action="store_true", help="print the plan (configs, skipped, estimate) only")
    sweep.add_argument("--list-presets", action="store_true", help="list the preset grids")
    sweep.set_defaults(func=cmd_sweep)

    search = subparsers.add_parser("search", help="smallest / fastest model within --max-drop points of the baseline")
    _common(search, model_required=True)
    search.add_argument("--max-drop", type=float, default=1.0, help="accuracy budget in points (default 1.0)")
    search.add_argument("--objective", choices=("size", "latency"), default="size", help="what to minimise")
    search.add_argument("--preset", default="weight-only", help="the uniform settings to try first (a sweep preset)")
    search.add_argument("--grid", help="JSON grid of uniform settings to try first instead of --preset")
    search.add_argument("--no-refine", action="store_true", help="skip the layer-skip refinement runs")
    search.add_argument("--no-mixed", action="store_true",
                        help="skip the sensitivity analysis and the mixed-precision candidates built from it")
    search.add_argument("--top", type=int, default=15, help="candidates to print (default 15)")
    search.set_defaults(func=cmd_search)
