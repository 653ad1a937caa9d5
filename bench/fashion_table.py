"""Table 1: fashion_resnet under the configurations of coremltools' ResNet50 guide plus PyTorch int8, every number measured end to end.

Each row is one `run_experiment` (compress → real artifact → full test set → A/B latency vs fp32 in one process).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from bench.tables import format_table, write_csv
from core.experiment import ExperimentOptions, baseline_record, run_experiment
from core.formatting import fmt_mb, fmt_num
from core.measure.latency import LatencySettings
from core.metrics import format_metric, metrics_in
from core.models.sources import load_model
from core.progress import Progress
from core.specs import spec_from_dict

MODEL = "sample:fashion_resnet"

# coremltools' ResNet50 guide (scenarios 1 and 2) on our own ResNet-style sample; then the PyTorch int8 paths.
CONFIGS: list[tuple[str, dict]] = [
    ("palettize 8-bit", {"method": "palettize", "n_bits": 8}),
    ("palettize 6-bit", {"method": "palettize", "n_bits": 6}),
    ("palettize 4-bit", {"method": "palettize", "n_bits": 4}),
    ("palettize 3-bit", {"method": "palettize", "n_bits": 3}),
    ("palettize 4-bit g16", {"method": "palettize", "n_bits": 4, "granularity": "per_grouped_channel", "group_size": 16}),
    ("palettize 4-bit g8", {"method": "palettize", "n_bits": 4, "granularity": "per_grouped_channel", "group_size": 8}),
    ("palettize 4-bit g4", {"method": "palettize", "n_bits": 4, "granularity": "per_grouped_channel", "group_size": 4}),
    ("prune 50%", {"method": "prune", "target_sparsity": 0.5}),
    ("prune 75%", {"method": "prune", "target_sparsity": 0.75}),
    ("prune 90%", {"method": "prune", "target_sparsity": 0.9}),
    ("W8A8 (LinearQuantizer)", {"method": "quantize_activations", "workflow": "calibration", "calibration_samples": 128}),
    ("torch_static int8 x86", {"method": "torch_static", "workflow": "calibration", "backend": "x86", "calibration_samples": 256}),
    ("torch_dynamic int8", {"method": "torch_dynamic", "dtype": "int8"}),
]
QUICK = {"palettize 4-bit", "prune 50%", "torch_static int8 x86", "torch_dynamic int8"}

COLUMNS = [
    ("config", "config"),
    ("top1", "top-1"),
    ("delta", "Δ"),
    ("agree", "agree"),
    ("snr", "SNR"),
    ("size", "size"),
    ("kind", "artifact"),
    ("ratio16", "vs fp16"),
    ("bpw", "bits/w"),
    ("check", "size÷theory"),
    ("p50", "p50"),
    ("base_p50", "fp32"),
    ("speed", "lat ratio"),
    ("secs", "compress"),
]


def run_fashion_table(
    *, out_dir: Path, threads: int, quick: bool, eval_limit: int | None, model_id: str = MODEL, log=print
) -> dict:
    model = load_model(model_id)
    latency = LatencySettings(threads=threads, batch_sizes=(1, 32), seconds_per_batch_size=1.0 if quick else 2.0)
    options = ExperimentOptions(eval_limit=eval_limit if eval_limit else (1000 if quick else None), latency=latency)
    base = baseline_record(model=model, dataset=None, options=options)
    rows = [_baseline_row(base)]
    csv_rows = [{"config": "fp32 baseline", **{k: base.get(k) for k in BASELINE_CSV_FIELDS}}]
    records = {}
    scratch = Path(tempfile.mkdtemp(prefix="cs_bench_"))
    try:
        for name, spec_dict in CONFIGS:
            if quick and name not in QUICK:
                continue
            log(f"  · {name} …", end="", flush=True)
            record = run_experiment(
                model=model, spec=spec_from_dict(spec_dict), dataset=None,
                artifacts_dir=scratch / name.replace(" ", "_"), progress=Progress(), options=options,
            )
            records[name] = record
            log(f" {record['compress_seconds']:.1f} s")
            rows.append(_experiment_row(name, record))
            csv_rows.append(_experiment_csv_row(name, record))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    title = (
        f"Table 1 — {model_id}: {base['eval_images']:,} test images ({base['dataset_source']}), "
        f"latency batch 1, {threads} threads, A/B interleaved vs fp32 in one process"
    )
    text = format_table(rows, COLUMNS, title=title)
    log(text)
    log(
        "  size = real artifact on disk (.mlpackage for coremltools methods, TorchScript for torch int8); ×fp16 vs the\n"
        "  real fp16 .mlpackage; size÷theory = artifact ÷ per-layer theoretical size ('!' = outside ±5 %, see CSV note).\n"
        "  Latency of palettize / prune is PyTorch running decompressed weights on this CPU — equal to fp32 by\n"
        "  construction; W8A8 adds fake-quant ops around every layer, so it is slower on CPU; only torch_static /\n"
        "  torch_dynamic run int8 kernels here (torch_dynamic: only the final Linear; convolutions stay fp32)."
    )
    stem = model_id.split(":")[-1]
    write_csv(out_dir / f"{stem}.csv", csv_rows)
    (out_dir / f"{stem}.txt").write_text(text + "\n")
    return {"baseline": base, "records": records, "text": text}


BASELINE_CSV_FIELDS = (
    "accuracy_top1", "accuracy_top5", "size_fp16_bytes", "size_fp32_bytes", "latency_ms_p50", "latency_ms_p90",
    "eval_images", "dataset_source",
)


def _baseline_row(base: dict) -> dict:
    """The table's first row: the uncompressed model, against which every ratio below is 1."""
    return {
        "config": "fp32 baseline",
        "top1": format_metric("accuracy_top1", base["accuracy_top1"]),
        "delta": "",
        "agree": format_metric("agreement_top1", 1.0),
        "snr": "∞",
        "size": fmt_mb(base["size_fp16_bytes"]),
        "kind": "fp16 mlpackage",
        "ratio16": format_metric("compression_ratio_fp16", 1.0),
        "bpw": format_metric("bits_per_weight", 16.0),
        "check": "",
        "p50": format_metric("latency_ms_p50", base["latency_ms_p50"]),
        "base_p50": format_metric("latency_ms_p50", base["latency_ms_p50"]),
        "speed": format_metric("latency_ratio", 1.0),
        "secs": "",
    }


def _experiment_row(name: str, record: dict) -> dict:
    """One configuration's printed row; size÷theory is marked '!' when outside the size check's tolerance."""
    acc, before = record["accuracy_top1"], record["baseline_accuracy_top1"]
    check = record["size_check"] or {}
    return {
        "config": name,
        "top1": format_metric("accuracy_top1", acc),
        "delta": format_metric(
            "accuracy_delta_pts", (acc - before) * 100 if acc is not None and before is not None else None
        ),
        "agree": format_metric("agreement_top1", record["agreement_top1"]),
        "snr": "∞" if record["outputs_identical"] else format_metric("output_snr_db", record["output_snr_db"]),
        "size": fmt_mb(record["size_bytes"]),
        "kind": record["artifact_kind"] or "",
        "ratio16": format_metric("compression_ratio_fp16", record["compression_ratio_fp16"]),
        "bpw": format_metric("bits_per_weight", record["bits_per_weight"]),
        "check": (fmt_num(check.get("ratio"), ".3f") + ("" if check.get("ok") else " !")) if check.get("ratio") else "n/a",
        "p50": format_metric("latency_ms_p50", record["latency_ms_p50"]),
        "base_p50": format_metric("baseline_latency_ms_p50", record["baseline_latency_ms_p50"]),
        "speed": format_metric("latency_ratio", record["latency_ratio"]),
        "secs": format_metric("compress_seconds", record["compress_seconds"]),
    }


def _experiment_csv_row(name: str, record: dict) -> dict:
    """One configuration's raw numbers for the CSV, with its spec and the size check's verdict and note."""
    check = record["size_check"] or {}
    return {
        "config": name,
        "spec": json.dumps(record["spec"], sort_keys=True),
        **{m.key: record.get(m.key) for m in metrics_in("bench")},
        "artifact_kind": record.get("artifact_kind"),
        "threads": record.get("threads"),
        "size_check_ok": check.get("ok"),
        "size_check_note": check.get("note"),
        "latency_note": record["latency_note"],
    }
