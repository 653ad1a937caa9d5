"""Run an experiment and save it: the one transaction the pages and the CLI share.

A run writes into a staging folder of the store; the record is added (row + folder rename, one SQLite
transaction) only after every step succeeded. A failure or a cancel (``Cancelled``) leaves no row and no folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from core.data import Dataset
from core.experiment import run_experiment
from core.experiment_options import ExperimentOptions
from core.models.sources import LoadedModel
from core.progress import Cancelled, Progress, as_progress
from core.records import EXPERIMENT, build_record, size_fields, spec_fields
from core.specs import AnySpec
from core.store import ExperimentStore

MLPACKAGE_ACCURACY_NOTE = (
    "Accuracy is not measurable here: Core ML predictions do not run on Linux, so this experiment records the "
    "compressed package's size and weight statistics only."
)


def run_and_save(
    *,
    store: ExperimentStore,
    model: LoadedModel,
    spec: AnySpec,
    dataset: Dataset | None,
    options: ExperimentOptions | None = None,
    progress: Progress | None = None,
    staging_prefix: str = "run_",
    finalize: Callable[[dict, float], None] | None = None,
) -> dict:
    """Compress, export, measure and save one experiment; returns the saved record (with its ``id``).

    `staging_prefix` names the staging folder; `finalize(record, run_seconds)`, called after the run and before
    the save, may fill fields the run itself does not know (a job runner's ``job_id``, ``phase_seconds``, …).
    """
    progress = as_progress(progress)
    with store.staging(prefix=staging_prefix) as staging:
        started = time.perf_counter()
        record = run_experiment(
            model=model, spec=spec, dataset=dataset, artifacts_dir=staging, progress=progress, options=options
        )
        if finalize is not None:
            finalize(record, time.perf_counter() - started)
        return _save(store=store, record=record, staging=staging, progress=progress)


def run_mlpackage_and_save(
    *,
    store: ExperimentStore,
    package_path: Path,
    spec: AnySpec,
    progress: Progress | None = None,
    label: str | None = None,
    staging_prefix: str = "run_",
    finalize: Callable[[dict, float], None] | None = None,
) -> dict:
    """Compress an uploaded .mlpackage (or a .zip of one) on the Core ML side and save it as an experiment.

    Data-free methods only (``core.export.compress_mlpackage`` says which). The record has artifact_kind
    "mlpackage", the size against the uploaded package, the per-weight metadata in ``coreml_weights`` and no
    accuracy or latency (Core ML predictions do not run on Linux; the notes say so). `label` names the model
    (default: the package's file name). `staging_prefix` and `finalize` as in ``run_and_save`` (a job runner names
    the staging folders after its job and adds ``job_id`` / ``phase_seconds``).
    """
    from core.export import compress_mlpackage

    progress = as_progress(progress)
    package_path = Path(package_path)
    name = label or package_path.name.removesuffix(".zip")
    # A zipped upload is unpacked into a store staging folder of its own: removed when done, and by the store's
    # clean-up if the process dies meanwhile.
    with store.staging(prefix=staging_prefix) as staging, store.staging(prefix=f"{staging_prefix}unzip_") as unzipped:
        start = time.perf_counter()
        outcome = compress_mlpackage(
            path=package_path, spec=spec, out_path=staging / "model.mlpackage", progress=progress.sub(0.0, 0.95),
            extract_to=unzipped / "package",
        )
        original = outcome["original_size_bytes"]
        record = build_record(
            EXPERIMENT,
            model=f"mlpackage:{name}",
            model_label=f"{name} (Core ML package)",
            architecture="Core ML package",
            weights_note="uploaded .mlpackage",
            params=sum(int(w.get("params") or 0) for w in outcome.get("weights_before") or []),
            **spec_fields(spec),
            compress_seconds=time.perf_counter() - start,
            dataset="none",
            dataset_source="none: Core ML predictions do not run on Linux",
            eval_images=0,
            accuracy_meaningful=False,
            artifact_path=outcome["artifact_path"],
            artifact_kind="mlpackage",
            size_fp16_bytes=original,
            size_fp16_source="the uploaded .mlpackage before compression (in its own precision)",
            **size_fields(size_bytes=outcome["size_bytes"], size_fp16_bytes=original, size_fp32_bytes=None),
            latency_note="Not measured: Core ML predictions do not run on Linux.",
            coreml_weights=outcome.get("weights") or [],
            notes=[
                MLPACKAGE_ACCURACY_NOTE,
                *(n for n in outcome.get("notes") or [] if not n.startswith("Accuracy is not")),
            ],
        )
        if finalize is not None:
            finalize(record, time.perf_counter() - start)
        return _save(store=store, record=record, staging=staging, progress=progress)


def _save(*, store: ExperimentStore, record: dict, staging: Path, progress: Progress) -> dict:
    progress.update(1.0, "Saving the experiment")  # the last chance to cancel: after this the run is kept
    if progress.cancelled:  # a cancel that arrived while the message above was being shown
        raise Cancelled("cancelled by the user")
    experiment_id = store.add(record, staging_dir=staging)
    return store.get(experiment_id)
