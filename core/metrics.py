"""The declared metrics of a record: name, unit, format, which direction is better, what it means, where it shows.

Each metric says which records carry it (``records``: the schema in ``core.records`` takes these fields and their
descriptions from here) and in which views it appears (``views``): the Compare table, the HTML report, the
side-by-side diff, the command line, the result card and the benchmark's CSV each list ``metrics_in(view)`` in
declaration order. Adding a metric is: compute it in ``core.measure``, put its value into the record where the
experiment is measured, declare it here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core import formatting


@dataclass(frozen=True)
class Unit:
    """How the values of one unit are written: as text, and as a number in a table column."""

    format: Callable[[Any], str]  # raw value → text, e.g. 0.9336 → "93.36 %"
    symbol: str  # unit of the raw value in labels ("bytes", "ms"); "" when the label says it
    scale: float = 1.0  # raw value × scale = the number a table column shows (fraction → %, bytes → MB)
    column_format: str = "%.2f"  # printf format of that number (e.g. Streamlit's NumberColumn)
    # True: a table shows the text, not a number (a size ratio below 1 must read "2.00× larger", which no printf
    # format of the number can say)
    text_in_tables: bool = False


UNITS: dict[str, Unit] = {
    "fraction": Unit(formatting.fmt_pct, "", 100.0, "%.2f"),
    "points": Unit(lambda v: formatting.fmt_num(v, "+.2f", " pts"), "pts", 1.0, "%+.2f"),
    "bytes": Unit(formatting.fmt_bytes, "bytes", 1e-6, "%.3f"),
    "ms": Unit(formatting.fmt_ms, "ms", 1.0, "%.3f"),
    "ratio": Unit(formatting.fmt_ratio, "×", 1.0, "%.2f×"),
    "size ratio": Unit(formatting.fmt_size_ratio, "×", 1.0, "%.2f×", text_in_tables=True),
    "dB": Unit(lambda v: formatting.fmt_num(v, ".1f", " dB"), "dB", 1.0, "%.1f"),
    "seconds": Unit(formatting.fmt_seconds, "s", 1.0, "%.1f"),
    "count": Unit(lambda v: formatting.fmt_num(v, ",.0f"), "", 1.0, "%d"),
    "bits": Unit(lambda v: formatting.fmt_num(v, ".2f", " bits"), "", 1.0, "%.2f"),
}


# Where a metric can be shown; a metric lists the ones it appears in.
VIEWS: dict[str, str] = {
    "compare": "the experiments table of the Compare page",
    "report": "the experiments table of the HTML report",
    "diff": "two experiments side by side (Compare page)",
    "cli": "the command line's sweep / search results table",
    "card": "the result card of one experiment (Compress and Compare pages)",
    "bench": "the benchmark's CSV",
}
# Records that can carry a metric (core.records' kinds); none: a column the experiments frame derives.
RECORD_KINDS = ("baseline", "experiment")
_EXPERIMENT = frozenset({"experiment"})
_BOTH = frozenset(RECORD_KINDS)


@dataclass(frozen=True)
class Metric:
    """One number a record carries: how it is written, which records carry it and which views show it."""

    key: str  # the record key (or an experiments_frame column)
    label: str  # words for diffs and cards
    unit: str  # one of UNITS
    better: int  # +1: higher is better, -1: lower is better, 0: neither
    description: str
    header: str = ""  # table column header in the column's display unit (default: the label)
    views: frozenset[str] = frozenset()  # keys of VIEWS
    records: frozenset[str] = _EXPERIMENT  # kinds of record that carry it (RECORD_KINDS); empty: derived

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"metric {self.key}: unknown unit {self.unit!r}; use one of {', '.join(UNITS)}.")
        if self.better not in (-1, 0, 1):
            raise ValueError(f"metric {self.key}: better must be -1, 0 or 1.")
        for name, values, known in (("views", self.views, VIEWS), ("records", self.records, RECORD_KINDS)):
            if not isinstance(values, frozenset) or not values <= set(known):
                raise ValueError(f"metric {self.key}: {name} must be a frozenset of {', '.join(known)}; got {values!r}.")

    def format(self, value: Any) -> str:
        """The value as text with its unit; "n/a" for a missing or non-finite value."""
        return UNITS[self.unit].format(value)

    @property
    def label_with_unit(self) -> str:
        """'artifact size (bytes)': the label of a raw value (the diff shows raw values)."""
        symbol = UNITS[self.unit].symbol
        return f"{self.label} ({symbol})" if symbol else self.label

    @property
    def column_header(self) -> str:
        return self.header or self.label

    def column_value(self, value: Any) -> float | None:
        """The value as a table column shows it (fractions in %, bytes in MB); None when missing."""
        number = formatting.as_number(value)
        return None if number is None else number * UNITS[self.unit].scale

    @property
    def column_format(self) -> str:
        return UNITS[self.unit].column_format


def _in(*views: str) -> frozenset[str]:
    return frozenset(views)


_TABLES = ("compare", "report")  # the experiments table, on the Compare page and in the HTML report
_EVERYWHERE = (*_TABLES, "diff", "cli", "card", "bench")

METRICS: tuple[Metric, ...] = (
    # quality
    Metric("accuracy_top1", "top-1 accuracy", "fraction", 1,
           "Share of evaluation images whose top prediction is the label.", "top-1 %",
           views=_in(*_EVERYWHERE), records=_BOTH),
    Metric("accuracy_top5", "top-5 accuracy", "fraction", 1,
           "Share of evaluation images whose label is among the 5 top predictions.", "top-5 %",
           views=_in("diff", "bench"), records=_BOTH),
    Metric("baseline_accuracy_top1", "baseline top-1 accuracy", "fraction", 1,
           "Top-1 accuracy of the uncompressed model on the same images.", "baseline top-1 %",
           views=_in("bench")),
    Metric("baseline_accuracy_top5", "baseline top-5 accuracy", "fraction", 1,
           "Top-5 accuracy of the uncompressed model on the same images.", "baseline top-5 %"),
    Metric("accuracy_delta_pts", "accuracy change", "points", 1,
           "Top-1 accuracy change vs the baseline, in percentage points.", "Δ pts",
           views=_in(*_TABLES), records=frozenset()),
    Metric("agreement_top1", "agreement with baseline", "fraction", 1,
           "Share of images where the compressed model predicts the same class as the uncompressed one.", "agreement %",
           views=_in(*_TABLES, "diff", "card", "bench")),
    Metric("output_snr_db", "output SNR", "dB", 1,
           "Signal-to-noise ratio of the logits against the uncompressed model's (n/a: identical outputs).", "SNR dB",
           views=_in("diff", "bench")),
    Metric("output_psnr_db", "output PSNR", "dB", 1,
           "Peak signal-to-noise ratio of the logits against the uncompressed model's (n/a: identical outputs).",
           "PSNR dB", views=_in(*_TABLES, "diff", "bench")),
    Metric("flipped", "flipped predictions", "count", -1, "Images whose predicted class changed.", "flipped",
           views=_in("diff", "bench")),
    # size
    Metric("size_bytes", "artifact size", "bytes", -1, "The exported artifact measured on disk.", "size MB",
           views=_in(*_EVERYWHERE)),
    Metric("size_fp16_bytes", "fp16 baseline size", "bytes", -1,
           "The uncompressed fp16 .mlpackage on disk (the baseline of the compression ratio).", "fp16 MB",
           views=_in("bench"), records=_BOTH),
    Metric("size_fp32_bytes", "fp32 size", "bytes", -1, "fp32 tensor bytes of the uncompressed model.", "fp32 MB",
           records=_BOTH),
    Metric("theoretical_size_bytes", "theoretical size", "bytes", -1,
           "Bytes computed from the per-layer report (indices, LUTs, scales, masks, uncompressed layers).", "theory MB",
           views=_in("bench")),
    Metric("compression_ratio_fp16", "compression vs fp16", "size ratio", 1,
           "fp16 .mlpackage bytes ÷ artifact bytes (below 1: the artifact is larger).", "size vs fp16",
           views=_in(*_TABLES, "diff", "cli", "bench")),
    Metric("compression_ratio_fp32", "compression vs fp32", "size ratio", 1,
           "fp32 tensor bytes ÷ artifact bytes (below 1: the artifact is larger).", "size vs fp32", views=_in("bench")),
    Metric("bits_per_weight", "bits per weight", "bits", -1, "Stored bits per weight, LUTs, scales and masks included.",
           "bits/weight", views=_in(*_TABLES, "diff", "bench")),
    # speed and memory
    Metric("latency_ms_p50", "latency p50", "ms", -1, "Median latency at batch 1 on this CPU.", "latency ms",
           views=_in(*_EVERYWHERE), records=_BOTH),
    Metric("latency_ms_p90", "latency p90", "ms", -1, "90th-percentile latency at batch 1 on this CPU.", "p90 ms",
           views=_in("diff", "bench"), records=_BOTH),
    Metric("baseline_latency_ms_p50", "baseline latency p50", "ms", -1,
           "Median latency of the uncompressed model, timed interleaved with the compressed one.", "baseline ms",
           views=_in("bench")),
    Metric("baseline_latency_ms_p90", "baseline latency p90", "ms", -1,
           "90th-percentile latency of the uncompressed model.", "baseline p90 ms", views=_in("bench")),
    Metric("latency_ratio", "latency vs baseline", "ratio", -1,
           "Candidate median ÷ baseline median, timed interleaved; in brackets the 95 % bootstrap interval over the "
           "interleaved pairs (an interval that includes 1 is no measurable difference).", "latency vs baseline",
           views=_in(*_TABLES, "diff", "bench")),
    Metric("peak_memory_bytes", "peak memory", "bytes", -1, "Peak CPU memory of one batch-1 inference.", "memory MB",
           views=_in("diff", "bench"), records=_BOTH),
    Metric("baseline_peak_memory_bytes", "baseline peak memory", "bytes", -1,
           "Peak CPU memory of one batch-1 inference of the uncompressed model.", "baseline memory MB",
           views=_in("bench")),
    # time
    Metric("compress_seconds", "time to compress", "seconds", -1, "Wall time of the compression step alone.",
           "compress s", views=_in(*_TABLES, "diff", "card", "bench")),
    Metric("export_seconds", "time to export", "seconds", -1, "Wall time of writing the artifact.", "export s"),
    Metric("eval_seconds", "time to evaluate", "seconds", -1, "Wall time of evaluating the model.", "eval s",
           records=_BOTH),
    # what the numbers were measured on
    Metric("eval_images", "evaluation images", "count", 0, "Images the accuracy was measured on.", "eval images",
           views=_in(*_TABLES, "bench"), records=_BOTH),
    Metric("validation_accuracy_top1", "top-1 on validation images", "fraction", 1,
           "Top-1 on a class-balanced slice of the training pool (never test images): what a winner is chosen by.",
           "validation top-1 %"),
    Metric("baseline_validation_accuracy_top1", "baseline top-1 on validation images", "fraction", 1,
           "The uncompressed model's top-1 on the same validation images.", "validation baseline %"),
    Metric("validation_images", "validation images", "count", 0,
           "Training-pool images the validation accuracy was measured on.", "validation images"),
)

METRICS_BY_KEY = {m.key: m for m in METRICS}


def metric(key: str) -> Metric:
    """The declaration of one metric; KeyError names the known keys."""
    try:
        return METRICS_BY_KEY[key]
    except KeyError:
        raise KeyError(f"no metric {key!r}; declared: {', '.join(METRICS_BY_KEY)}") from None


def metrics_in(view: str) -> tuple[Metric, ...]:
    """The metrics a view shows, in declaration order; ValueError names the known views."""
    if view not in VIEWS:
        raise ValueError(f"no view {view!r}; known: {', '.join(VIEWS)}.")
    return tuple(m for m in METRICS if view in m.views)


def recorded_metrics(kind: str) -> tuple[Metric, ...]:
    """The metrics a record of `kind` ('baseline' or 'experiment') carries, in declaration order."""
    if kind not in RECORD_KINDS:
        raise ValueError(f"no record kind {kind!r}; known: {', '.join(RECORD_KINDS)}.")
    return tuple(m for m in METRICS if kind in m.records)


def format_metric(key: str, value: Any) -> str:
    """`value` written as the metric `key` is written everywhere ("93.36 %", "1.23 MB", "n/a")."""
    return metric(key).format(value)


# --------------------------------------------------------------------------- table headers

# Plain words for the raw field names that reach a table. A table a person reads goes through
# ``core.tables.readable_table``, which takes its headers from here (a metric's own label where one is declared).
COLUMN_LABELS: dict[str, str] = {
    "id": "#",
    "spec_summary": "setting",
    "method": "method",
    "origin_kind": "came from",
    "origin_label": "origin",
    "origin_id": "origin #",
    "parent_experiment_id": "refines #",
    "experiment_id": "experiment",
    "job_id": "job",
    "params": "weights",
    "bits_per_weight": "bits / weight",
    "n_luts": "look-up tables",
    "lut_entries": "LUT entries",
    "n_scales": "scales",
    "snr_db": "weight SNR",
    "probe_snr_db": "output SNR alone",
    "kl_alone": "output change alone (KL)",
    "top1_change_alone_pts": "top-1 change alone (pts)",
    "unique_values": "distinct values",
    "true_name": "true class",
    "before_name": "before",
    "after_name": "after",
    "accuracy_top1": "top-1",
    "size_bytes": "size",
    "latency_ms_p50": "latency p50",
    "compression_ratio_fp16": "size vs fp16",
}


def column_label(name: str) -> str:
    """The header a table shows for a raw column: declared above, else the metric's label, else the name in words."""
    if name in COLUMN_LABELS:
        return COLUMN_LABELS[name]
    if name in METRICS_BY_KEY:
        return METRICS_BY_KEY[name].label
    return name.replace("_", " ")
