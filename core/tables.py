"""Tabular views of experiment records (pandas), shared by the pages, the report, the CLI and the charts.

``experiments_frame`` has one row per experiment with raw numbers (fractions stay fractions) for charts and CSV;
``experiments_table`` is the experiments table a person reads (Compare page, HTML report), its measured columns
declared in ``core.metrics``; ``diff_frame`` puts two experiments side by side; ``flipped_frame`` lists the
predictions a compression changed.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from core.formatting import as_number
from core.measure.latency import recorded_interval
from core.measure.size import layer_bits_per_weight
from core.metrics import Metric, metric

# Columns of the experiments frame, in display order. Fractions stay fractions here; tables format them.
TABLE_COLUMNS = (
    "id",
    "created_at",
    "model",
    "method",
    "workflow",
    "spec_summary",
    "accuracy_top1",
    "baseline_accuracy_top1",
    "accuracy_delta_pts",
    "accuracy_top5",
    "agreement_top1",
    "output_snr_db",
    "flipped",
    "size_bytes",
    "size_fp16_bytes",
    "size_fp32_bytes",
    "compression_ratio_fp16",
    "bits_per_weight",
    "latency_ms_p50",
    "latency_ms_p90",
    "baseline_latency_ms_p50",
    "baseline_latency_ms_p90",
    "latency_ratio",
    "latency_note",
    "compress_seconds",
    "eval_images",
    "dataset",
    "accuracy_meaningful",
    "artifact_kind",
    "spec_json",
)
TEXT_COLUMNS = (
    "created_at",
    "model",
    "method",
    "workflow",
    "spec_summary",
    "dataset",
    "artifact_kind",
    "spec_json",
    "label",
    "model_label",
    "accuracy_meaningful",
    "latency_note",
    "eval_set",
    "eval_set_label",
    "origin",
)


def experiment_label(record: dict) -> str:
    """'#12 4-bit palettization, data-free': how one experiment is named in charts and pickers."""
    return f"#{record.get('id', '?')} {record.get('spec_summary') or record.get('method')}"


def eval_set_key(record: dict) -> str:
    """Which evaluation set a record was measured on (dataset, where its images came from, how many): experiments
    are compared with the baseline of their own set, never with another set's."""
    return f"{record.get('dataset')}|{record.get('dataset_source')}|{record.get('eval_images')}"


def eval_set_label(record: dict) -> str:
    """'Fashion-MNIST, 500 images' (a short name for an evaluation set in legends)."""
    images = record.get("eval_images")
    count = f", {int(images):,} images" if isinstance(images, int | float) and images == images else ""
    return f"{record.get('dataset') or 'no dataset'}{count}"


def origin_label(record: dict) -> str:
    """Where an experiment came from, for filters: 'manual', 'sweep #3: …', 'search: …' (core.jobs.origins)."""
    origin = record.get("origin") or {}
    kind = origin.get("kind") or "manual"
    if origin.get("label"):
        return str(origin["label"])
    return kind if origin.get("id") is None else f"{kind} #{origin['id']}"


def experiments_frame(records: Sequence[dict]) -> pd.DataFrame:
    """One row per experiment with the numeric columns the table and the charts use."""
    rows = []
    for rec in records:
        acc, base = as_number(rec.get("accuracy_top1")), as_number(rec.get("baseline_accuracy_top1"))
        row = {name: rec.get(name) for name in TABLE_COLUMNS}
        row["accuracy_delta_pts"] = (acc - base) * 100 if acc is not None and base is not None else None
        row["spec_json"] = json.dumps(rec.get("spec") or {}, sort_keys=True, default=str)
        row["label"] = experiment_label(rec)
        row["model_label"] = rec.get("model_label") or rec.get("model")
        row["eval_set"] = eval_set_key(rec)
        row["eval_set_label"] = eval_set_label(rec)
        row["origin"] = origin_label(rec)
        interval = recorded_interval(rec.get("latency")) if isinstance(rec.get("latency"), dict) else None
        row["latency_ratio_low"] = interval.low if interval else None
        row["latency_ratio_high"] = interval.high if interval else None
        row["latency_by_construction"] = (rec.get("latency") or {}).get("mode") == "confirmation"
        breakdown = rec.get("size_breakdown") or {}
        for part, value in breakdown.items():
            if isinstance(value, int | float):
                row[f"breakdown_{part}"] = value
        rows.append(row)
    frame = (
        pd.DataFrame(rows, columns=[*TABLE_COLUMNS, "label", "model_label", "eval_set", "eval_set_label", "origin"])
        if not rows
        else pd.DataFrame(rows)
    )
    for column in frame.columns:
        if column not in TEXT_COLUMNS:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def experiments_csv(records: Sequence[dict]) -> str:
    frame = experiments_frame(records)
    columns = [c for c in frame.columns if c != "label"]
    buffer = io.StringIO()
    frame.to_csv(buffer, columns=columns, index=False, quoting=csv.QUOTE_MINIMAL)
    return buffer.getvalue()


# --------------------------------------------------------------------------- the experiments table people read

# Its measured columns, in order; header, unit, format and help come from each metric's declaration.
EXPERIMENTS_TABLE_METRICS: tuple[Metric, ...] = tuple(
    metric(key)
    for key in (
        "accuracy_top1",
        "accuracy_delta_pts",
        "agreement_top1",
        "size_bytes",
        "compression_ratio_fp16",
        "bits_per_weight",
        "latency_ms_p50",
        "latency_ratio",
        "compress_seconds",
        "eval_images",
    )
)


def experiments_table(frame: pd.DataFrame, *, formatted: bool = False) -> pd.DataFrame:
    """The experiments table (Compare page, HTML report): #, method, setting, the declared metrics, created.

    ``formatted=False``: metric columns are numbers in their display unit (%, MB, ms …) for a sortable table —
    format them with ``experiments_table_formats()``. ``formatted=True``: every metric is text with its unit
    ("93.36 %", "1.23 MB") under the metric's label.
    """
    from core.compress.registry import method_label

    table = pd.DataFrame(
        {
            "#": frame["id"].astype("Int64"),
            "method": [method_label(m) for m in frame["method"]],
            "setting": frame["spec_summary"],
        }
    )
    for declared in EXPERIMENTS_TABLE_METRICS:
        values = frame[declared.key] if declared.key in frame else pd.Series([None] * len(frame), dtype=object)
        if formatted:  # the text carries its unit, so the header is the plain label
            table[declared.label] = [declared.format(v) for v in values]
        else:
            table[declared.column_header] = [declared.column_value(v) for v in values]
            table[declared.column_header] = pd.to_numeric(table[declared.column_header], errors="coerce")
    table["created"] = frame["created_at"].astype(str).str.slice(0, 19).str.replace("T", " ")
    return table


def experiments_table_formats() -> dict[str, tuple[str, str]]:
    """{column header: (printf number format, help text)} of the measured columns of ``experiments_table``."""
    return {m.column_header: (m.column_format, m.description) for m in EXPERIMENTS_TABLE_METRICS}


# --------------------------------------------------------------------------- per class, per layer


def per_class_frame(records: Sequence[dict]) -> pd.DataFrame:
    """Long format: experiment × class with accuracy before/after and the change in points."""
    rows = []
    for rec in records:
        names = rec.get("class_names") or []
        after = rec.get("per_class_accuracy") or []
        before = rec.get("baseline_per_class_accuracy") or []
        for i, (a, b) in enumerate(zip(after, before, strict=False)):
            a, b = as_number(a), as_number(b)
            rows.append(
                {
                    "id": rec.get("id"),
                    "label": experiment_label(rec),
                    "method": rec.get("method"),
                    "class_index": i,
                    "class_name": names[i] if i < len(names) else str(i),
                    "accuracy": a,
                    "baseline_accuracy": b,
                    "delta_pts": (a - b) * 100 if a is not None and b is not None else None,
                }
            )
    return pd.DataFrame(
        rows,
        columns=["id", "label", "method", "class_index", "class_name", "accuracy", "baseline_accuracy", "delta_pts"],
    )


LAYER_COLUMNS = (
    "name",
    "type",
    "shape",
    "params",
    "compressed",
    "reason",
    "method",
    "bits",
    "bits_per_weight",
    "granularity",
    "n_luts",
    "lut_entries",
    "n_scales",
    "sparsity",
    "snr_db",
)


def layers_frame(record: dict) -> pd.DataFrame:
    """The per-layer report of one experiment, with an effective bits-per-weight column (storage incl. overhead)."""
    rows = []
    for layer in record.get("layers") or []:
        row = {name: layer.get(name) for name in LAYER_COLUMNS}
        row["shape"] = "×".join(str(s) for s in layer.get("shape") or [])
        row["bits_per_weight"] = layer_bits_per_weight(layer)
        row["reason"] = layer.get("reason") or ("" if layer.get("compressed") else "not compressed (no reason given)")
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(LAYER_COLUMNS))
    for column in ("params", "bits", "bits_per_weight", "n_luts", "lut_entries", "n_scales", "sparsity", "snr_db"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


# --------------------------------------------------------------------------- two experiments side by side

# Metrics compared side by side; label, unit and better-direction come from core.metrics.
DIFF_METRICS: tuple[Metric, ...] = tuple(
    metric(key)
    for key in (
        "accuracy_top1",
        "accuracy_top5",
        "agreement_top1",
        "output_snr_db",
        "flipped",
        "size_bytes",
        "compression_ratio_fp16",
        "bits_per_weight",
        "latency_ms_p50",
        "latency_ms_p90",
        "latency_ratio",
        "peak_memory_bytes",
        "compress_seconds",
    )
)


def diff_verdict(declared: Metric, a: Any, b: Any) -> str:
    """'B better', 'A better' or '' (equal, missing, or a metric with no better direction)."""
    va, vb = as_number(a), as_number(b)
    if va is None or vb is None or abs(vb - va) <= 1e-12 or not declared.better:
        return ""
    return "B better" if (vb - va) * declared.better > 0 else "A better"


def diff_frame(a: dict, b: dict) -> pd.DataFrame:
    """Two experiments side by side: every metric and every spec setting that differs, with B − A."""
    rows = []
    for declared in DIFF_METRICS:
        va, vb = as_number(a.get(declared.key)), as_number(b.get(declared.key))
        delta = vb - va if va is not None and vb is not None else None
        rows.append(
            {"what": declared.label_with_unit, "A": va, "B": vb, "B − A": delta, "": diff_verdict(declared, va, vb)}
        )
    spec_a, spec_b = _flat_spec(a.get("spec") or {}), _flat_spec(b.get("spec") or {})
    for key in sorted(set(spec_a) | set(spec_b)):
        if spec_a.get(key) != spec_b.get(key):
            rows.append(
                {"what": f"spec · {key}", "A": spec_a.get(key), "B": spec_b.get(key), "B − A": None, "": "differs"}
            )
    frame = pd.DataFrame(rows, columns=["what", "A", "B", "B − A", ""])
    return frame.astype({"A": object, "B": object})


def _flat_spec(spec: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in spec.items():
        name = f"{prefix}{key}"
        if key == "steps" and isinstance(value, list):
            for i, step in enumerate(value):
                out.update(_flat_spec(step, f"step{i + 1}."))
        elif isinstance(value, dict):
            out[name] = json.dumps(value, sort_keys=True) if value else "{}"
        elif isinstance(value, list):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


# --------------------------------------------------------------------------- flipped predictions

FLIP_KINDS = {"broken": "✓→✗", "fixed": "✗→✓", "still wrong": "✗→✗"}


def flip_kind(item: dict) -> str:
    """'broken' (right before, wrong after), 'fixed' (wrong before, right after) or 'still wrong' (a different
    wrong class) for one entry of a record's ``flipped_images``."""
    if item.get("before") == item.get("true"):
        return "broken"
    if item.get("after") == item.get("true"):
        return "fixed"
    return "still wrong"


def flipped_frame(record: dict, *, kind: str = "all") -> pd.DataFrame:
    """The changed predictions of one experiment with class names, their kind and mark; ``kind`` filters
    ("all", "broken", "fixed", "still wrong")."""
    if kind != "all" and kind not in FLIP_KINDS:
        raise ValueError(f"kind must be 'all' or one of {', '.join(FLIP_KINDS)}; got {kind!r}.")
    names = record.get("class_names") or []

    def name(index: Any) -> str:
        return names[index] if isinstance(index, int) and 0 <= index < len(names) else str(index)

    rows = []
    for item in record.get("flipped_images") or []:
        item_kind = flip_kind(item)
        if kind in ("all", item_kind):
            rows.append(
                {
                    **item,
                    "kind": item_kind,
                    "mark": FLIP_KINDS[item_kind],
                    "true_name": name(item.get("true")),
                    "before_name": name(item.get("before")),
                    "after_name": name(item.get("after")),
                }
            )
    columns = ["index", "true", "before", "after", "kind", "mark", "true_name", "before_name", "after_name"]
    return pd.DataFrame(rows, columns=columns)
