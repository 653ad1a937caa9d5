"""The uncompressed model's baseline as a job, and its record cached on disk so every process finds it.

The Model page never measures a baseline itself: it looks the record up here (``cached_baseline``: a JSON file
under the data folder's cache, keyed by the model's weights, the evaluation set and the measurement options) and,
on a miss, submits a job of kind "baseline" whose worker measures it (``measure_baseline``) and writes it here.
A queue of runs on one model therefore measures its baseline once, and a reload or another tab shows it at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from core.jobs.refs import apply_latency_overrides, options_from_dict, split_latency_overrides

if TYPE_CHECKING:
    from core.data import Dataset
    from core.evaluation import EvalData
    from core.experiment_options import ExperimentOptions
    from core.models.sources import LoadedModel
    from core.progress import Progress

BASELINE_RECORDS_FOLDER = "baseline_records"  # under the cache folder (disk part "other_cache", capped there)


def resolve_options(*, options: dict | None, input_shape: tuple[int, ...], cache_dir: Path | None) -> ExperimentOptions:
    """A job's JSON options (with ``latency_overrides``) as the ExperimentOptions its worker measures with."""
    values, overrides = split_latency_overrides(data=options)
    resolved = options_from_dict(data=values, cache_dir=cache_dir)
    return apply_latency_overrides(options=resolved, overrides=overrides, input_shape=input_shape)


def baseline_cache_key(*, model: LoadedModel, data: EvalData, options: ExperimentOptions) -> str:
    """Everything a baseline record depends on: weights, evaluation set, what is measured and how."""
    from core.baseline import model_fingerprint

    settings = options.latency_settings(model.input_shape).to_dict()
    parts = (
        "baseline-record-v1",
        model_fingerprint(model),
        data.key,
        options.export,
        options.measure_latency,
        options.measure_memory,
        options.seed,
        json.dumps(settings, sort_keys=True),
    )
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:24]


def _path(*, key: str, options: ExperimentOptions) -> Path:
    return options.cache_root() / BASELINE_RECORDS_FOLDER / f"{key}.json"


def cached_baseline(*, model: LoadedModel, dataset: Dataset | None, options: ExperimentOptions) -> dict | None:
    """The baseline record measured earlier by any process for this model, data and options; None if there is none.

    Cheap (hashes the weights, reads one small file): it never evaluates, exports or times anything.
    """
    from core.evaluation import resolve_eval_data

    data = resolve_eval_data(model=model, dataset=dataset, options=options)
    return read_baseline(key=baseline_cache_key(model=model, data=data, options=options), options=options)


def read_baseline(*, key: str, options: ExperimentOptions) -> dict | None:
    path = _path(key=key, options=options)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # missing or damaged: measured again
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: the cache's size cap removes other entries first
    return record if isinstance(record, dict) else None


def write_baseline(*, key: str, record: dict, options: ExperimentOptions) -> None:
    """Store a baseline record atomically (a reader never sees half a file); a read-only cache only costs a re-run."""
    from core.disk import enforce_cap_of_folder

    path = _path(key=key, options=options)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(record, allow_nan=True))
        os.replace(tmp, path)
        enforce_cap_of_folder(path.parent, part="other_cache", keep=[path])


def measure_baseline(
    *,
    model: LoadedModel,
    dataset: Dataset | None,
    options: ExperimentOptions,
    progress: Progress | None = None,
    timed_exclusively: Callable[[], bool | None] | None = None,
) -> tuple[str, dict]:
    """(cache key, record): read from the cache, else measured (``core.baseline.baseline_record``) and cached.

    `timed_exclusively` (a job runner's timing lock) says whether the latency was timed alone on the machine; the
    record's ``timing_exclusive`` says so.
    """
    from core.baseline import baseline_record
    from core.evaluation import resolve_eval_data
    from core.progress import as_progress

    progress = as_progress(progress)
    data = resolve_eval_data(model=model, dataset=dataset, options=options)
    key = baseline_cache_key(model=model, data=data, options=options)
    cached = read_baseline(key=key, options=options)
    if cached is not None:
        progress.update(1.0, "Baseline (cached)")
        return key, cached
    record = baseline_record(model=model, dataset=dataset, progress=progress, options=options)
    if options.measure_latency and timed_exclusively is not None:
        record["timing_exclusive"] = bool(timed_exclusively())
    write_baseline(key=key, record=record, options=options)
    return key, record
