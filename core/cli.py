"""Command line: ``python -m core.cli models | methods | baseline | run | jobs | cancel | sweep | search |
sensitivity | recipe``.

    python -m core.cli models
    python -m core.cli baseline --model sample:fashion_resnet --json baseline.json
    python -m core.cli run --model sample:fashion_resnet --spec '{"method": "palettize", "n_bits": 4}' --json run.json
    python -m core.cli run ... --executor ray      # run the job on a Ray cluster ($COMPRESSION_STUDIO_RAY_ADDRESS)
    python -m core.cli run ... --no-save          # do not add the run to the experiment store
    python -m core.cli jobs                       # the job queue (the app's sidebar shows the same)
    python -m core.cli cancel 12                  # cancel job #12 (queued: at once; running: at its next step)

The benchmark tables are ``python -m bench.run_bench`` (``make bench``): bench/ sits above core and core never
imports it. This module assembles the command sets (its own, ``core.explore.cli``, ``core.explore.sensitivity_cli``)
into one parser; they share ``core.cli_support`` and never import this module.

One convention for every command: ``--json FILE`` writes the result in the store's record schema (core.records);
exit status 0 done, 1 target missed, 2 bad input (one line on stderr, no traceback), 3 internal error, 130
cancelled (Ctrl-C; nothing half-written).

A run is a job in the queue of the data folder (``$COMPRESSION_STUDIO_HOME`` or ``studio_data/``), like a run started
in the app: a worker process (``--executor local``, the default) or a Ray task (``--executor ray``) computes it and
saves the experiment, while the CLI shows its progress from the job row. ``--no-save`` runs in this process and keeps
the run out of the store (artifacts then go to ``--artifacts``, next to ``--json`` or under ``cli_runs/``). A run
whose exported artifact's weights do not match the evaluated ones exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.cli_support import (
    EXIT_BAD_INPUT,
    EXIT_CANCELLED,
    EXIT_DONE,
    EXIT_INTERNAL_ERROR,
    EXIT_TARGET_MISSED,
    CliError,
    ProgressBar,
    cancellable,
    load_model,
    one_line,
    run_with_progress,
    write_json,
)
from core.explore.cli import add_explore_commands
from core.explore.sensitivity_cli import add_sensitivity_commands
from core.jobs import ExecutorError
from core.metrics import format_metric
from core.paths import cli_runs_dir
from core.progress import Cancelled, Progress, captured_library_output, quiet_libraries
from core.speedup_wording import record_latency_change, speedup_text

if TYPE_CHECKING:
    from core.data import Dataset
    from core.models.sources import LoadedModel

DEBUG_ENV = "COMPRESSION_STUDIO_DEBUG"


def _read_spec(args: argparse.Namespace):  # -> AnySpec
    from core.specs import parse_spec

    if bool(args.spec) == bool(args.spec_file):
        raise CliError("give the compression spec with exactly one of --spec '<json or yaml>' or --spec-file FILE.")
    if args.spec_file:
        path = Path(args.spec_file)
        if not path.is_file():
            raise CliError(f"spec file not found: {path}")
        text = path.read_text()
    else:
        text = args.spec
    if not text.strip():
        raise CliError("the spec is empty; e.g. --spec '{\"method\": \"palettize\", \"n_bits\": 4}'.")
    return parse_spec(text)


def _options(args: argparse.Namespace):  # -> ExperimentOptions
    from core.experiment_options import ExperimentOptions, default_latency_settings
    from core.measure.latency import LatencySettings

    latency = None
    if args.threads is not None or args.batch_sizes:
        base = default_latency_settings(tuple(args.input_shape))
        fields = {}
        if args.threads is not None:
            fields["threads"] = args.threads
        if args.batch_sizes:
            fields["batch_sizes"] = tuple(args.batch_sizes)
        latency = LatencySettings(**{**base.to_dict(), **fields})
    return ExperimentOptions(
        eval_limit=args.eval_limit,
        latency=latency,
        measure_latency=not args.no_latency,
        measure_memory=not args.no_latency,
        export=not args.no_export,
    )


# --------------------------------------------------------------------------- commands


def cmd_models(args: argparse.Namespace) -> int:
    """The sources (every torchvision architecture, one line for timm's ~1,300), or the architectures matching
    --search / of --route (timm's parameter counts come from building each match on the meta device)."""
    from core.models.catalog import architecture_choices
    from core.models.sources import list_sources

    if args.search is None and args.route is None:
        sources = list_sources()
        if args.json:
            write_json(args.json, {"sources": [dataclasses.asdict(s) for s in sources]})
        width = max(len(s.source_id) for s in sources)
        for source in sources:
            print(f"{source.source_id:<{width}}  {source.description}")
        return 0
    choices = architecture_choices(search=args.search, routes=(args.route,) if args.route else None,
                                   with_timm_params=True)
    if args.json:
        write_json(args.json, {"architectures": [dataclasses.asdict(c) for c in choices]})
    if not choices:
        raise CliError(f"no architecture matches {args.search!r}" + (f" in route {args.route}" if args.route else "")
                       + "; try a shorter part of the name.")
    width = max(len(c.source_id) for c in choices)
    for choice in choices:
        print(f"{choice.source_id:<{width}}  {choice.detail}")
    print(f"{len(choices):,} architecture(s)")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    """Which methods and workflows apply to a model, and why the others do not."""
    from core.compress.applicability import method_availability, workflow_availability

    model = load_model(args.model, args.weights)
    methods = method_availability(model=model)
    workflows = workflow_availability(model=model)
    if args.json:
        write_json(args.json, {"model": model.source_id, "form": model.form, "methods": methods, "workflows": workflows})
    width = max(len(k) for k in [*methods, *workflows])
    print(f"{model.label} ({model.form})")
    for name, reason in [*methods.items(), *((f"workflow {k}", v) for k, v in workflows.items())]:
        print(f"{name:<{width + 9}}  {'applies' if reason is None else 'no: ' + reason}")
    return 0


def _dataset(args: argparse.Namespace, model: LoadedModel) -> Dataset | None:
    """None lets the experiment pick the model's own dataset (or synthetic inputs); --data overrides it."""
    if args.data == "auto":
        return None
    from core.data import resolve_dataset

    return resolve_dataset(
        choice=args.data, input_shape=model.input_shape, mean=model.mean, std=model.std, num_classes=model.num_classes,
        preprocessing=model.preprocessing,
    )


def cmd_baseline(args: argparse.Namespace) -> int:
    from core.models.sources import accuracy_meaning

    model = load_model(args.model, args.weights)
    args.input_shape = model.input_shape
    options = _options(args)
    notes: list[str] = []
    with captured_library_output(notes):
        from core.experiment import baseline_record

    record = run_with_progress(args, lambda progress: baseline_record(model=model, dataset=_dataset(args, model), progress=progress, options=options))
    write_json(args.json, record)
    shown = format_metric
    print(f"model            {record['model']}  ({record['params']:,} params)")
    meaning = accuracy_meaning(accuracy_meaningful=record["accuracy_meaningful"], weights_note=record.get("weights_note"))
    acc_note = f"  — {meaning}" if meaning else ""
    print(f"top-1 / top-5    {shown('accuracy_top1', record['accuracy_top1'])} / {shown('accuracy_top5', record['accuracy_top5'])}{acc_note}")
    print(f"evaluated on     {record['eval_images']:,} images, {record['dataset_source']}")
    print(
        f"size fp32 / fp16 {shown('size_fp32_bytes', record['size_fp32_bytes'])} / "
        f"{shown('size_fp16_bytes', record['size_fp16_bytes'])} ({record['size_fp16_source']})"
    )
    if record.get("latency_ms_p50") is not None:
        print(
            f"latency (b=1)    p50 {shown('latency_ms_p50', record['latency_ms_p50'])}, "
            f"p90 {shown('latency_ms_p90', record['latency_ms_p90'])}, {record['threads']} threads"
        )
    if args.json:
        print(f"record written to {args.json}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    spec = _read_spec(args)
    if args.artifacts and not args.no_save:
        raise CliError("--artifacts applies only with --no-save: a saved run keeps its artifacts in the experiment store.")
    if not args.no_save:
        return _run_as_job(args, spec)
    if args.executor:
        raise CliError("--executor applies to saved runs; a --no-save run computes in this process.")
    model = load_model(args.model, args.weights)
    args.input_shape = model.input_shape
    options = _options(args)
    notes: list[str] = []
    with captured_library_output(notes):
        from core.experiment import run_experiment

    dataset = _dataset(args, model)
    artifacts = _unsaved_artifacts_dir(args, spec.method)
    record = run_with_progress(
        args,
        lambda progress: run_experiment(
            model=model, spec=spec, dataset=dataset, artifacts_dir=artifacts, progress=progress, options=options
        ),
    )
    write_json(args.json, record)
    print_run(record)
    print(f"artifacts in {artifacts} (not saved in the experiment store)")
    if args.json:
        print(f"record written to {args.json}")
    return run_status(record)


def _job_options(args: argparse.Namespace) -> dict:
    """The job's options; --threads / --batch-sizes are laid over the model's defaults by the worker."""
    options: dict = {
        "eval_limit": args.eval_limit,
        "measure_latency": not args.no_latency,
        "measure_memory": not args.no_latency,
        "export": not args.no_export,
    }
    overrides = {}
    if args.threads is not None:
        overrides["threads"] = args.threads
    if args.batch_sizes:
        overrides["batch_sizes"] = list(args.batch_sizes)
    if overrides:
        options["latency_overrides"] = overrides
    return options


def _data_ref(choice: str):  # -> DataRef
    from core.jobs import DataRef

    if choice in ("auto", "bundled", "full", "none"):
        return DataRef(kind=choice)
    path = Path(choice)
    if not path.exists():
        raise CliError(f"--data {choice}: no such file or folder; use 'auto', 'bundled' or a dataset path.")
    return DataRef(kind="path", path=str(path.resolve()))


def _model_ref(args: argparse.Namespace):  # -> ModelRef
    from core.jobs import ModelRef
    from core.models.sources import preflight_model

    # an unknown name or a model too large for this machine is refused here, before a job is queued
    preflight_model(args.model, weights=Path(args.weights) if args.weights else None)
    ref = ModelRef.from_source_id(args.model, weights=Path(args.weights).resolve() if args.weights else None)
    if ref.path is not None:
        path = Path(ref.path)
        if not path.is_file():
            raise CliError(f"model file not found: {path}")
        ref = ModelRef(kind=ref.kind, name=ref.name, path=str(path.resolve()))  # the worker runs elsewhere
    return ref


def _run_as_job(args: argparse.Namespace, spec) -> int:
    """Queue the run, make sure something runs it, follow its job row with the progress bar; print the record."""
    from core.jobs import JobQueue, LocalExecutor, get_executor

    executor = get_executor(name=args.executor)
    job_id = executor.submit(model=_model_ref(args), data=_data_ref(args.data), spec=spec.to_dict(),
                             options=_job_options(args), label=spec.summary())
    print(f"job #{job_id} queued ({executor.name} executor)", flush=True)
    queue: JobQueue = executor.queue
    job = _follow(args, queue=queue, job_id=job_id,
                  keep_workers=executor.ensure_workers if isinstance(executor, LocalExecutor) else None)
    if job.state == "cancelled":
        raise Cancelled(f"job #{job_id} cancelled")
    if job.state != "done":
        raise CliError(f"job #{job_id} failed: {job.error or job.message}")
    with captured_library_output([]):
        from core.store import ExperimentStore

    store = ExperimentStore(queue.home)
    record = store.get(int(job.experiment_id))
    write_json(args.json, record)
    print_run(record)
    print(f"saved as experiment #{record['id']} in {store.home}")
    if args.json:
        print(f"record written to {args.json}")
    return run_status(record)


def run_status(record: dict) -> int:
    """1 (target missed) when the exported artifact's weights differ from the evaluated ones: its numbers would
    describe a model that is not the file; 0 otherwise (not checked counts as done, the card says so)."""
    if record.get("artifact_weights_match") is False:
        check = record.get("artifact_weights_check") or {}
        print(f"artifact weights do not match the evaluated ones: {check.get('summary', 'see the record')}",
              file=sys.stderr)
        return EXIT_TARGET_MISSED
    return EXIT_DONE


def _follow(args: argparse.Namespace, *, queue, job_id: int, keep_workers=None, poll: float = 0.2):  # -> Job
    """Poll the job row until it ends, driving the bar; Ctrl-C cancels the job (a second one stops waiting)."""
    import time

    bar = ProgressBar(enabled=not args.quiet)
    progress = Progress()
    cancel_sent = False
    last_ensure = time.monotonic()
    try:
        with cancellable(progress):
            while True:
                job = queue.get(job_id=job_id)
                if job.finished:
                    return job
                if progress.cancelled and not cancel_sent:
                    queue.cancel(job_id=job_id)
                    cancel_sent = True
                if job.state == "running":
                    bar(job.progress, job.message)
                if keep_workers is not None and time.monotonic() - last_ensure > 2.0:
                    keep_workers()  # a worker that crashed or idled out is replaced while the job waits
                    last_ensure = time.monotonic()
                time.sleep(poll)
    finally:
        bar.close()


def _unsaved_artifacts_dir(args: argparse.Namespace, method: str) -> Path:
    """--artifacts, else next to --json, else a new folder under the data folder's cli_runs/."""
    if args.artifacts:
        artifacts = Path(args.artifacts)
    elif args.json:
        artifacts = Path(args.json).with_suffix("").with_name(Path(args.json).stem + "_artifacts")
    else:
        from core.disk import enforce_caps

        enforce_caps(parts=["cli_runs"])  # older unsaved runs beyond the cap go, least recently used first
        artifacts = cli_runs_dir() / f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}_{method}"
    if artifacts.exists() and any(artifacts.iterdir()):
        raise CliError(f"the artifacts folder {artifacts} is not empty; pass another --artifacts folder or remove it.")
    return artifacts


def print_run(record: dict) -> None:
    from core.models.sources import accuracy_meaning

    shown = format_metric
    print(f"{record['spec_summary']} on {record['model']}  (compressed in {shown('compress_seconds', record['compress_seconds'])})")
    if record["accuracy_meaningful"]:
        print(
            f"top-1            {shown('accuracy_top1', record['accuracy_top1'])} "
            f"(baseline {shown('baseline_accuracy_top1', record['baseline_accuracy_top1'])})"
        )
    else:
        print(f"accuracy         {accuracy_meaning(accuracy_meaningful=False, weights_note=record.get('weights_note'))}")
    snr = "∞ (identical)" if record.get("outputs_identical") else shown("output_snr_db", record["output_snr_db"])
    print(f"agreement        {shown('agreement_top1', record['agreement_top1'])}, output SNR {snr}, {record['flipped']} flipped")
    size_line = f"size             {shown('size_bytes', record['size_bytes'])} {record['artifact_kind'] or '(not exported)'}"
    if record.get("compression_ratio_fp16"):
        size_line += f" ({shown('compression_ratio_fp16', record['compression_ratio_fp16'])} than the fp16 .mlpackage)"
    if record.get("bits_per_weight") is not None:
        size_line += f", {shown('bits_per_weight', record['bits_per_weight'])} per weight"
    print(size_line)
    if (check := record.get("artifact_weights_check")) is not None:
        verdict = {True: "match", False: "MISMATCH", None: "not checked"}[record.get("artifact_weights_match")]
        print(f"artifact weights {verdict}: {check.get('summary')}")
    if record.get("latency_ms_p50") is not None:
        change = record_latency_change(record)  # the interval decides: "no measurable difference (±x %)" or the change
        ratio = change.short if change is not None else shown("latency_ratio", record["latency_ratio"])
        print(
            f"latency (b=1)    {shown('latency_ms_p50', record['latency_ms_p50'])} vs baseline "
            f"{shown('baseline_latency_ms_p50', record['baseline_latency_ms_p50'])} "
            f"({ratio}) — {record['latency_note']}"
        )
    if speed := speedup_text(record):  # the same wording as the result card, Compare and the report
        print(f"speed-up         {speed}")


def cmd_jobs(args: argparse.Namespace) -> int:
    import time

    from core.formatting import fmt_seconds
    from core.jobs import JobQueue

    jobs = JobQueue().list(states=args.state, limit=args.limit)
    if args.json:
        write_json(args.json, {"jobs": [_job_dict(job) for job in jobs]})
    if not jobs:
        print("no jobs" + (f" in state {', '.join(args.state)}" if args.state else "") + ".")
        return 0
    rows = [("id", "state", "executor", "progress", "time", "run", "model", "result")]
    for job in jobs:
        took = ((job.finished_at or time.time()) - job.started_at) if job.started_at else None
        result = (f"experiment #{job.experiment_id}" if job.state == "done"
                  else job.error if job.state == "failed" else job.message)
        rows.append((str(job.id), job.state, job.executor, f"{job.progress * 100:.0f} %",
                     fmt_seconds(took) if took is not None else "-", job.label or "-", job.model_ref.source_id,
                     result or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def _job_dict(job) -> dict:
    data = dataclasses.asdict(job)
    data["model_ref"], data["data_ref"] = job.model_ref.to_dict(), job.data_ref.to_dict()
    return data


def cmd_cancel(args: argparse.Namespace) -> int:
    from core.jobs import JobQueue

    queue = JobQueue()
    for job_id in args.ids:
        state = queue.cancel(job_id=job_id)
        if state == "cancelled":
            print(f"job #{job_id} cancelled before it started.")
        elif state == "running":
            print(f"job #{job_id}: cancel requested; it stops at its next step and saves nothing.")
        else:
            print(f"job #{job_id} has already ended ({state}); nothing to cancel.")
    return 0


# --------------------------------------------------------------------------- parser


def add_run_commands(sub: Any) -> None:
    """models, methods, baseline, run, jobs, cancel."""
    models = sub.add_parser("models", help="list the model source ids (--search NAME: architectures of every route)")
    models.add_argument("--json", help="also write the list to this JSON file")
    models.add_argument("--search", help="list the architectures whose name contains this text (every route, timm "
                        "included), e.g. --search mobilenet")
    models.add_argument("--route", choices=("sample", "torchvision", "timm"),
                        help="list every architecture of this route (with --search: only matches there)")
    models.set_defaults(func=cmd_models)

    def measurement_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", required=True, help="source id, e.g. sample:fashion_resnet, torchvision:resnet18, "
                       "timm:resnet10t, torchscript:FILE, export:FILE.pt2, onnx:FILE.onnx (`models` lists them)")
        p.add_argument("--weights", help="weights file (.pt/.pth read with weights_only=True, or .safetensors) for a "
                       "sample, torchvision or timm architecture")
        p.add_argument("--json", help="write the record to this JSON file")
        p.add_argument("--eval-limit", type=int, help="evaluate only the first N test images")
        p.add_argument("--threads", type=int, help="threads for latency measurements (default 2)")
        p.add_argument("--batch-sizes", type=int, nargs="+", help="latency batch sizes (default: 1 and a larger batch)")
        p.add_argument("--no-latency", action="store_true", help="skip latency and memory measurements")
        p.add_argument("--no-export", action="store_true", help="skip writing the .mlpackage / TorchScript artifacts")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.add_argument(
            "--data",
            default="auto",
            help="evaluation data: auto (data/ → Debian package → download → bundled subset), bundled, "
            "or a path to Fashion-MNIST IDX files / an ImageFolder directory or .zip",
        )

    methods = sub.add_parser("methods", help="which compression methods apply to a model, and why the others do not")
    methods.add_argument("--model", required=True, help="source id (as for baseline / run)")
    methods.add_argument("--weights", help="state_dict file for a torchvision architecture")
    methods.add_argument("--json", help="also write the table to this JSON file")
    methods.set_defaults(func=cmd_methods)

    baseline = sub.add_parser("baseline", help="measure the uncompressed model")
    measurement_flags(baseline)
    baseline.set_defaults(func=cmd_baseline)

    run = sub.add_parser("run", help="compress, export, measure; save the experiment in the store")
    measurement_flags(run)
    run.add_argument("--spec", help="the compression spec as JSON or YAML text")
    run.add_argument("--spec-file", help="a file holding the spec (JSON or YAML)")
    run.add_argument("--no-save", action="store_true", help="do not add the run to the experiment store")
    run.add_argument(
        "--artifacts", help="with --no-save: folder for the artifact and weights.npz (default: next to --json)"
    )
    run.add_argument("--executor", choices=("local", "ray"),
                     help="where the job runs: local worker processes or a Ray cluster "
                     "(default: $COMPRESSION_STUDIO_EXECUTOR, else local)")
    run.set_defaults(func=cmd_run)

    jobs = sub.add_parser("jobs", help="list the job queue (newest first)")
    jobs.add_argument("--state", nargs="+", choices=("queued", "running", "done", "failed", "cancelled"),
                      help="only jobs in these states")
    jobs.add_argument("--limit", type=int, default=30, help="at most this many jobs (default 30)")
    jobs.add_argument("--json", help="also write the jobs to this JSON file")
    jobs.set_defaults(func=cmd_jobs)

    cancel = sub.add_parser("cancel", help="cancel jobs by id (a running one stops at its next step)")
    cancel.add_argument("ids", type=int, nargs="+", metavar="ID", help="job id(s), as `jobs` lists them")
    cancel.set_defaults(func=cmd_cancel)



# Every command set adds its subcommands to the one parser; a command module imports core.cli_support, never this
# module, so the commands form no cycle with the parser that assembles them.
COMMAND_SETS: tuple[Callable[[Any], None], ...] = (add_run_commands, add_explore_commands, add_sensitivity_commands)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.cli", description="Compression Studio from the command line.",
                                     epilog="exit status: 0 done, 1 target missed, 2 bad input, 3 internal error, "
                                     "130 cancelled")
    sub = parser.add_subparsers(dest="command", required=True)
    for add_commands in COMMAND_SETS:
        add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    quiet_libraries()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its one-line usage error
        return int(exc.code or 0)
    try:
        for name in ("eval_limit", "threads", "limit"):
            value = getattr(args, name, None)
            if value is not None and value < 1:
                raise CliError(f"--{name.replace('_', '-')} must be at least 1; got {value}.")
        return int(args.func(args))
    except (Cancelled, KeyboardInterrupt):
        print("cancelled: no record or artifact was written.", file=sys.stderr)
        return EXIT_CANCELLED
    except (ValueError, OSError, ExecutorError) as exc:  # SpecError, ModelLoadError, JobError, no Ray cluster, …
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        print(
            f"internal error ({type(exc).__name__}): {one_line(exc)} — rerun with {DEBUG_ENV}=1 for the traceback.",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
