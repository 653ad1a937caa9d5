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

from core import metrics as declared_metrics
from core.formatting import as_number
from core.measure.latency import recorded_interval
from core.measure.size import layer_bits_per_weight
from core.metrics import UNITS, Metric, column_label, metrics_in

# Columns of the experiments frame: what identifies an experiment, every declared metric (core.metrics, so a new
# metric reaches the frame, the CSV and the tables without a change here), then text columns. Fractions stay
# fractions here; tables format them.
_FIRST_COLUMNS = ("id", "created_at", "model", "method", "workflow", "spec_summary")
_LAST_COLUMNS = ("latency_note", "dataset", "accuracy_meaningful", "artifact_kind", "artifact_weights_match", "spec_json")


def frame_columns() -> tuple[str, ...]:
    """The experiments frame's columns as declared now (TABLE_COLUMNS: as declared when this module was loaded)."""
    return (*_FIRST_COLUMNS, *(m.key for m in declared_metrics.METRICS), *_LAST_COLUMNS)


TABLE_COLUMNS = frame_columns()
TEXT_COLUMNS = (
    "created_at",
    "model",
    "method",
    "workflow",
    "spec_summary",
    "dataset",
    "artifact_kind",
    "artifact_weights_match",
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
        row = {name: rec.get(name) for name in frame_columns()}
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
        pd.DataFrame(rows, columns=[*frame_columns(), "label", "model_label", "eval_set", "eval_set_label", "origin"])
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

# Its measured columns: the metrics declared with the "compare" view (the report's table: the "report" view), in
# declaration order; header, unit, format and help come from each metric's declaration.
EXPERIMENTS_TABLE_METRICS: tuple[Metric, ...] = metrics_in("compare")
TABLE_VIEWS = ("compare", "report")


ARTIFACT_MATCH_HEADER = "artifact = evaluated"
ARTIFACT_MATCH_HELP = ("Do the exported artifact's decoded weights equal the weights the accuracy was measured with? "
                       "(fp16-exact for Core ML; exact int8 for TorchScript). MISMATCH: the file is not what was measured.")


def artifact_match_text(value: object) -> str:
    """'yes', 'MISMATCH' or 'not checked' for a record's artifact_weights_match."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "not checked"
    return "yes" if bool(value) else "MISMATCH"


def experiments_table(frame: pd.DataFrame, *, formatted: bool = False, view: str = "compare") -> pd.DataFrame:
    """The experiments table (Compare page, HTML report): #, method, setting, the metrics `view` ("compare" or
    "report") shows, created.

    ``formatted=False``: metric columns are numbers in their display unit (%, MB, ms …) for a sortable table —
    format them with ``experiments_table_formats()``; a column with a missing value, a unit that only text can say
    ("2.00× larger") and the latency ratio (with its interval) are text. ``formatted=True``: every metric is text
    with its unit ("93.36 %", "1.23 MB") under the metric's label.
    """
    from core.compress.registry import method_label

    if view not in TABLE_VIEWS:
        raise ValueError(f"view must be one of {', '.join(TABLE_VIEWS)}; got {view!r}.")
    table = pd.DataFrame(
        {
            "#": frame["id"].astype("Int64"),
            "method": [method_label(m) for m in frame["method"]],
            "setting": frame["spec_summary"],
        }
    )
    for declared in metrics_in(view):
        values = frame[declared.key] if declared.key in frame else pd.Series([None] * len(frame), dtype=object)
        header = declared.label if formatted else declared.column_header
        if declared.key == "latency_ratio":
            table[header] = latency_ratio_cells(frame)
        elif formatted or not table_column_is_numeric(declared, values):
            table[header] = [declared.format(v) if as_number(v) is not None else missing_word(declared.key)
                             for v in values]
        else:
            table[header] = pd.to_numeric(pd.Series([declared.column_value(v) for v in values]), errors="coerce")
    table[ARTIFACT_MATCH_HEADER] = [artifact_match_text(v) for v in frame.get("artifact_weights_match", [None] * len(frame))]
    table["created"] = frame["created_at"].astype(str).str.slice(0, 19).str.replace("T", " ")
    return table


def table_column_is_numeric(declared: Metric, values: pd.Series) -> bool:
    """A sortable number column only when every row has a value and the unit reads right as a number."""
    return not UNITS[declared.unit].text_in_tables and all(as_number(v) is not None for v in values)


def missing_word(key: str) -> str:
    """What a table says where a record has no value: 'not timed' for latencies, 'n/a' otherwise."""
    return "not timed" if "latency" in key else "n/a"


def latency_ratio_cells(frame: pd.DataFrame) -> list[str]:
    """Compressed ÷ baseline latency per row with its interval: 'no measurable difference (±8 %)', '0.52× (95 % CI
    0.48–0.57×)', or 'not timed'."""
    from core.measure.latency import RatioInterval
    from core.speedup_wording import latency_change

    cells = []
    for _, row in frame.iterrows():
        ratio = as_number(row.get("latency_ratio"))
        low, high = as_number(row.get("latency_ratio_low")), as_number(row.get("latency_ratio_high"))
        if ratio is None:
            cells.append("not timed")
        elif low is None or high is None:
            cells.append(f"{ratio:.2f}× (no interval recorded)")
        elif low <= 1.0 <= high or row.get("latency_by_construction") in (True, 1):
            # a run of the baseline's exact operations: a difference is the machine's, and the cell says so
            interval = RatioInterval(ratio=ratio, low=low, high=high, confidence=0.95, resamples=0, pairs=0)
            same = row.get("latency_by_construction") in (True, 1)
            cells.append(latency_change(interval, by_construction=same).short)
        else:
            cells.append(f"{ratio:.2f}× (95 % CI {low:.2f}–{high:.2f}×)")
    return cells


def experiments_table_formats() -> dict[str, tuple[str, str]]:
    """{column header: (printf number format, help text)} of the measured columns of ``experiments_table`` that can
    be numbers (a column that turned out text takes its help only)."""
    return {m.column_header: (m.column_format, m.description) for m in metrics_in("compare")
            if not UNITS[m.unit].text_in_tables and m.key != "latency_ratio"}


def experiments_table_help() -> dict[str, str]:
    """{column header: help text} of every measured column of ``experiments_table``."""
    return {m.column_header: m.description for m in metrics_in("compare")}


# --------------------------------------------------------------------------- any table a person reads

MISSING = "—"


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def readable_table(
    frame: pd.DataFrame,
    *,
    formats: dict[str, Any] | None = None,
    missing: str | dict[str, str] = MISSING,
    labels: dict[str, str] | None = None,
) -> pd.DataFrame:
    """A frame as a page shows it: headers in plain words (``core.metrics.column_label``), `formats` ({raw column:
    value → text}) applied, and no cell left to read "None" / "nan": a column with a missing value becomes text,
    the gap written as `missing` (one word, or {raw column: word}). Columns without gaps stay numbers (sortable).
    `labels`: headers of this table that differ from the declared ones."""
    formats = formats or {}
    out = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        values = frame[column]
        gap = missing.get(column, MISSING) if isinstance(missing, dict) else missing
        write = formats.get(column)
        if write is not None:
            out[column] = [gap if _is_missing(v) else write(v) for v in values]
        elif any(_is_missing(v) for v in values):
            out[column] = [gap if _is_missing(v) else _plain(v) for v in values]
        else:
            out[column] = values
    labels = labels or {}
    return out.rename(columns={c: labels.get(str(c)) or column_label(str(c)) for c in out.columns}).reset_index(drop=True)


def _plain(value: Any) -> str:
    """A value in a text column: whole numbers without '.0', others to 4 significant digits."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    number = as_number(value)
    if number is None or isinstance(value, str):
        return str(value)
    return f"{number:,.0f}" if number == int(number) else f"{number:.4g}"


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


LAYERS_TABLE_COLUMNS = ("name", "type", "shape", "params", "compressed", "reason", "bits", "bits_per_weight",
                        "granularity", "n_luts", "n_scales", "sparsity", "snr_db")


def layers_table(layers: pd.DataFrame) -> pd.DataFrame:
    """``layers_frame`` as the Layers page shows it: plain headers, units in the cells, "—" where a layer has no
    such number (an uncompressed layer has no LUTs and no weight SNR)."""
    from core.formatting import fmt_pct

    table = readable_table(
        layers[list(LAYERS_TABLE_COLUMNS)],
        formats={
            "compressed": lambda v: "yes" if v else "no",
            "bits": lambda v: f"{v:.0f}",
            "bits_per_weight": lambda v: f"{v:.2f}",
            "granularity": lambda v: str(v).replace("_", " "),
            "n_luts": lambda v: f"{v:,.0f}",
            "n_scales": lambda v: f"{v:,.0f}",
            "sparsity": lambda v: fmt_pct(v, 1),
            "snr_db": lambda v: f"{v:.1f} dB",
        },
    )
    return table.rename(columns={"reason": "why not compressed"})


# --------------------------------------------------------------------------- two experiments side by side

# Metrics compared side by side (the "diff" view); label, unit and better-direction come from core.metrics.
DIFF_METRICS: tuple[Metric, ...] = metrics_in("diff")


def diff_verdict(declared: Metric, a: Any, b: Any) -> str:
    """'B better', 'A better' or '' (equal, missing, or a metric with no better direction)."""
    va, vb = as_number(a), as_number(b)
    if va is None or vb is None or abs(vb - va) <= 1e-12 or not declared.better:
        return ""
    return "B better" if (vb - va) * declared.better > 0 else "A better"


def diff_frame(a: dict, b: dict) -> pd.DataFrame:
    """Two experiments side by side: every metric and every spec setting that differs, with B − A."""
    rows = []
    for declared in metrics_in("diff"):
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


def diff_table(a: dict, b: dict) -> pd.DataFrame:
    """``diff_frame`` as a person reads it: every value written with its unit ("93.36 %", "1.23 MB"), the change
    signed in the metric's unit ("-0.77 pts"), a gap as "—" (not measured)."""
    rows = []
    for declared in metrics_in("diff"):
        va, vb = as_number(a.get(declared.key)), as_number(b.get(declared.key))
        rows.append({"what": declared.label, "A": declared.format(va) if va is not None else MISSING,
                     "B": declared.format(vb) if vb is not None else MISSING,
                     "B − A": _signed_change(declared, va, vb), "": diff_verdict(declared, va, vb)})
    spec_a, spec_b = _flat_spec(a.get("spec") or {}), _flat_spec(b.get("spec") or {})
    for key in sorted(set(spec_a) | set(spec_b)):
        if spec_a.get(key) != spec_b.get(key):
            rows.append({"what": f"setting · {key}", "A": _setting_text(spec_a.get(key)),
                         "B": _setting_text(spec_b.get(key)), "B − A": "", "": "differs"})
    return pd.DataFrame(rows, columns=["what", "A", "B", "B − A", ""])


def _setting_text(value: Any) -> str:
    return MISSING if _is_missing(value) else _plain(value)


def _signed_change(declared: Metric, a: float | None, b: float | None) -> str:
    from core.formatting import fmt_bytes, fmt_pts

    if a is None or b is None:
        return MISSING
    delta = b - a
    if declared.unit == "fraction":
        return fmt_pts(delta)
    if declared.unit == "bytes":
        return ("+" if delta >= 0 else "−") + fmt_bytes(abs(delta))
    symbol = UNITS[declared.unit].symbol
    return f"{delta:+.4g} {symbol}".strip()


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


def flipped_table(record: dict, *, kind: str = "all") -> pd.DataFrame:
    """The changed predictions as a person reads them: image number, change, true class, before, after."""
    frame = flipped_frame(record, kind=kind)
    return pd.DataFrame({"image": frame["index"], "change": frame["mark"], "true class": frame["true_name"],
                         "before": frame["before_name"], "after": frame["after_name"]})


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
