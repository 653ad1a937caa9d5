"""The record schema: the fields of a baseline and of an experiment record, and the one builder of both.

A record is a plain JSON dict. ``build_record(kind, **fields)`` is the only place a record is assembled: it
rejects a field the schema does not declare, fills a declared field that was not measured with None (or ``[]``
for lists), orders the keys as declared and cleans the values into plain JSON. The section helpers below turn
measurement results (a model, its evaluation data, a latency run, a size estimate …) into groups of fields.
The numbers a user compares (accuracy, size, latency, memory …) are not listed here: each is declared once, with
unit, better-direction and the records that carry it, in ``core.metrics``, and the schema takes them from there.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from core.jsonable import to_jsonable
from core.metrics import recorded_metrics

if TYPE_CHECKING:
    from core.compress.result import CompressionResult
    from core.evaluation import EvalData
    from core.measure.latency import LatencySettings
    from core.measure.quality import Evaluation
    from core.measure.size import SizeEstimate
    from core.models.sources import LoadedModel

BASELINE = "baseline"
EXPERIMENT = "experiment"

def _metric_fields(kind: str) -> dict[str, str]:
    """The measured numbers a record of `kind` carries, described where they are declared (core.metrics)."""
    return {m.key: m.description for m in recorded_metrics(kind)}


_MODEL_FIELDS = {
    "model": "model source id (sample:…, torchvision:…, torchscript:…, state_dict:…, mlpackage:…)",
    "model_label": "the model's display name",
    "architecture": "architecture name",
    "weights_note": "where the weights come from (trained, random, uploaded)",
    "params": "number of parameters",
    "input_shape": "input shape without the batch dimension, e.g. [1, 28, 28]",
}
_DATA_FIELDS = {
    "dataset": "evaluation dataset name ('synthetic' when the model has none)",
    "dataset_source": "where the evaluation images came from",
    "accuracy_meaningful": "False for random weights or synthetic inputs: accuracy is then None",
    "class_names": "class names in output order",
}
_MACHINE_FIELDS = {
    "threads": "CPU threads of the latency measurements",
    "machine": "CPU, OS and library versions of the measurement",
}

BASELINE_FIELDS: dict[str, str] = {
    "kind": "'baseline'",
    **_MODEL_FIELDS,
    "created_at": "ISO time of the measurement",
    **_DATA_FIELDS,
    "per_class_accuracy": "accuracy per class (fractions, class order)",
    "accuracy_note": "why accuracy is not reported, when it is not",
    "size_fp16_source": "what size_fp16_bytes measured",
    "latency": "the full latency measurement (every batch size, every runner)",
    **_MACHINE_FIELDS,
    "notes": "what the user should know about these numbers (captured library warnings included)",
    **_metric_fields(BASELINE),
}

EXPERIMENT_FIELDS: dict[str, str] = {
    "kind": "'experiment'",
    **_MODEL_FIELDS,
    "spec": "the compression spec (core.specs to_dict)",
    "spec_summary": "one-line summary of the spec",
    "method": "compression method ('pipeline' for joint pipelines)",
    "workflow": "data_free / calibration / fine_tune",
    "created_at": "ISO time of the run",
    **_DATA_FIELDS,
    "validation_source": "which training-pool images the validation accuracy was measured on, in words",
    "per_class_accuracy": "accuracy per class of the compressed model",
    "baseline_per_class_accuracy": "accuracy per class of the uncompressed model",
    "outputs_identical": "the compressed model's outputs equal the baseline's",
    "flipped_images": "the changed predictions: index (see flipped_index_base), true, before, after",
    "flipped_index_base": "'dataset': flipped_images' index is the image's position in the dataset's evaluation split "
    "(None in older records: its position among the evaluated images)",
    "flipped_images_truncated": "flipped_images lists only the first flipped_limit",
    "artifact_path": "the exported artifact (.mlpackage folder or TorchScript file)",
    "artifact_kind": "'mlpackage' or 'torchscript'",
    "artifact_weights_match": "the artifact's decoded weights equal the evaluated module's (fp16-exact for Core ML, "
    "within a few fp16 units where it multiplies integers by an fp16 scale; exact for TorchScript int8); "
    "None when nothing was exported or the check could not run",
    "artifact_weights_check": "that comparison: summary, layers compared, max abs difference (and in fp16 units), "
    "mismatching layers, BatchNorm folds, tolerance, per-layer rows",
    "size_fp16_source": BASELINE_FIELDS["size_fp16_source"],
    "size_breakdown": "theoretical bytes per part (indices, LUTs, scales, masks, uncompressed, …)",
    "size_storage_format": "the storage format the theoretical size assumes",
    "bits_per_weight_nominal": "the nominal bit width averaged over the weights",
    "size_check": "artifact vs theoretical size: ratio, ok, note",
    "latency": "the full A/B latency measurement",
    "latency_note": "what the CPU latency of this method means",
    "latency_coreml": "Core ML prediction latency where Core ML runs (macOS), else why not",
    "runs_int8_kernels": "the compressed module runs real int8 CPU kernels",
    "int8_form": "torch_static: the int8 engine × graph form it ran in, timed / cached / forced, by how much it won",
    **_MACHINE_FIELDS,
    "layers": "per-layer report: compressed or not (with the reason), bits, LUTs, sparsity, SNR",
    "coreml_weights": "per-weight metadata of a compressed uploaded .mlpackage (None for PyTorch runs)",
    "notes": BASELINE_FIELDS["notes"],
    "calibration_source": "the images calibration / fine-tuning used",
    "weights_path": "weights.npz side file for histograms",
    # filled by a job runner (core.jobs) through run_and_save's finalize; None for runs started elsewhere
    "job_id": "the queued job that ran this experiment",
    "origin": "where the run came from: kind manual / sweep / sensitivity / recipe / search, its id, parent experiment",
    "timing_exclusive": "latency was timed while no other job computed (None when latency was not measured)",
    "phase_seconds": "wall time per phase of the job: load, compress, export, evaluate, artifact_check, latency, memory, save",
    **_metric_fields(EXPERIMENT),
}

SCHEMAS: dict[str, dict[str, str]] = {BASELINE: BASELINE_FIELDS, EXPERIMENT: EXPERIMENT_FIELDS}
_LIST_FIELDS = {"per_class_accuracy", "baseline_per_class_accuracy", "class_names", "flipped_images", "layers", "notes"}


class RecordError(ValueError):
    """A record was built with a field the schema does not declare (a programming error)."""


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def build_record(kind: str, **fields: Any) -> dict:
    """The one builder of baseline and experiment records.

    Unknown fields raise RecordError; declared fields that were not given are None (``[]`` for lists); keys come in
    the declared order; values are plain JSON (inf/nan → None). ``kind`` and ``created_at`` are filled in.
    """
    try:
        schema = SCHEMAS[kind]
    except KeyError:
        raise RecordError(f"unknown record kind {kind!r}; known: {', '.join(SCHEMAS)}") from None
    unknown = sorted(set(fields) - set(schema))
    if unknown:
        raise RecordError(f"{kind} record: undeclared field(s) {', '.join(unknown)}; declare them in core.records.")
    fields = {**fields, "kind": kind, "created_at": fields.get("created_at") or now()}
    record = {key: fields.get(key, [] if key in _LIST_FIELDS else None) for key in schema}
    record = to_jsonable(record)
    json.dumps(record, allow_nan=False)  # fail here, not in the store, if anything is not plain JSON
    return record  # type: ignore[return-value]


# --------------------------------------------------------------------------- sections


def model_fields(model: LoadedModel) -> dict:
    """What every record says about the model it measured."""
    return {
        "model": model.source_id,
        "model_label": model.label,
        "architecture": model.architecture,
        "weights_note": model.weights_note,
        "params": model.params,
        "input_shape": list(model.input_shape),
    }


def data_fields(data: EvalData) -> dict:
    """What every record says about the images it was measured on."""
    return {
        "dataset": data.name,
        "dataset_source": data.source,
        "eval_images": data.size,
        "accuracy_meaningful": data.accuracy_meaningful,
        "class_names": data.class_names,
    }


def accuracy_fields(evaluation: Evaluation, *, data: EvalData, num_classes: int, prefix: str = "") -> dict:
    """top-1, top-5 and per-class accuracy (None / [] when accuracy is not meaningful), keys prefixed by `prefix`."""
    from core.measure.quality import accuracy_summary

    if data.accuracy_meaningful:
        summary = accuracy_summary(evaluation=evaluation, num_classes=num_classes)
    else:
        summary = {"accuracy_top1": None, "accuracy_top5": None, "per_class_accuracy": []}
    return {f"{prefix}{key}": value for key, value in summary.items()}


def latency_fields(latency: dict | None, *, settings: LatencySettings, runner: str, prefix: str = "") -> dict:
    """p50 / p90 of one runner at the first batch size (None when latency was not measured)."""
    stats = latency["batches"][str(settings.batch_sizes[0])][runner] if latency else None
    return {
        f"{prefix}latency_ms_p50": stats["p50_ms"] if stats else None,
        f"{prefix}latency_ms_p90": stats["p90_ms"] if stats else None,
    }


def machine_fields(settings: LatencySettings) -> dict:
    from core.measure.machine import describe_machine

    return {"threads": settings.threads, "machine": describe_machine(threads=settings.threads)}


def spec_fields(spec: Any) -> dict:
    from core.specs import PipelineSpec

    return {
        "spec": spec.to_dict(),
        "spec_summary": spec.summary(),
        "method": spec.method if not isinstance(spec, PipelineSpec) else "pipeline",
        "workflow": spec.workflow,
    }


def size_fields(
    *,
    size_bytes: int | None,
    size_fp16_bytes: int | None,
    size_fp32_bytes: int | None,
    estimate: SizeEstimate | None = None,
    check: dict | None = None,
) -> dict:
    """Artifact size, the compression ratios it gives, and the theoretical estimate with its breakdown."""
    fields = {
        "size_bytes": size_bytes,
        "compression_ratio_fp16": (size_fp16_bytes / size_bytes) if size_bytes and size_fp16_bytes else None,
        "compression_ratio_fp32": (size_fp32_bytes / size_bytes) if size_bytes and size_fp32_bytes else None,
        "size_check": check,
    }
    if estimate is not None:
        fields.update(
            theoretical_size_bytes=estimate.total_bytes,
            size_breakdown=estimate.rounded_breakdown(),
            size_storage_format=estimate.storage_format,
            bits_per_weight=estimate.bits_per_weight,
            bits_per_weight_nominal=estimate.nominal_bits_per_weight,
        )
    return fields


def layer_rows(result: CompressionResult, estimate: SizeEstimate) -> list[dict]:
    """The per-layer report, each layer with its theoretical bytes and stored bits per weight."""
    rows = []
    for layer in result.layers:
        row = layer.to_dict()
        extra = dict(row.get("extra") or {})
        if layer.name in estimate.per_layer_bytes:
            extra["theoretical_bytes"] = estimate.per_layer_bytes[layer.name]
            if layer.params:
                extra["bits_per_weight"] = estimate.per_layer_bytes[layer.name] * 8 / layer.params
        row["extra"] = extra
        rows.append(row)
    return rows
