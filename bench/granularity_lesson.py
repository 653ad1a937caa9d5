"""Why MobileNets are hard to quantize, measured: int8 with one weight scale per tensor vs one per channel.

    .venv/bin/python -m bench.granularity_lesson                       # sample:fashion_mobilenet, full 10k test set
    .venv/bin/python -m bench.granularity_lesson --model sample:fashion_cnn --data bundled
    .venv/bin/python -m bench.granularity_lesson --model state_dict:fashion_mobilenet:other.safetensors

Runs the product's own methods through ``core.compress.compress``: W8A8 (coremltools LinearQuantizer, int8
activations from calibration images) with per-channel and per-tensor weights, and PyTorch static int8 (FX, x86
qconfig) with per-channel and per-tensor weights; measures top-1 on the test split (the full 10,000 images when
Fashion-MNIST is installed, else the bundled 2,500). Also prints how spread out the conv layers' per-channel weight
ranges are (BatchNorm folded, as the int8 kernels see them; core.measure.channel_ranges). One thread, seeded.
Results: printed as a Markdown table and written to bench/results/granularity_lesson_<model>_<data>.json;
``--write-manifest`` (a sample on the full test set only) also records the accuracies in sample_models/manifest.json,
where the Learn granularity lesson and the README quote them from.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from core.compress import compress
from core.data import Dataset, load_bundled_subset, load_fashion_mnist
from core.learn.depthwise import MANIFEST_KEY
from core.measure.channel_ranges import channel_range_table, spread_by_kind, with_int8_snr
from core.models.sources import SAMPLE_MODELS_DIR, load_model
from core.specs import QuantizeActivationsSpec, TorchStaticSpec

RESULTS = Path(__file__).resolve().parent / "results"

CONFIGS = {
    "W8A8 per-channel weights": QuantizeActivationsSpec(),
    "W8A8 per-tensor weights": QuantizeActivationsSpec(weight_per_channel=False),
    # The int8 form is forced so no timing race runs: accuracy does not depend on the form.
    "torch_static per-channel": TorchStaticSpec(per_channel=True, engine="x86", graph="graph_module"),
    "torch_static per-tensor": TorchStaticSpec(per_channel=False, engine="x86", graph="graph_module"),
}


@torch.inference_mode()
def top1(module: torch.nn.Module, dataset: Dataset) -> float:
    correct = 0
    for images, labels in dataset.batches(dataset.test, batch_size=500):
        correct += int((module(images).argmax(dim=1) == labels).sum())
    return correct / len(dataset.test)


def measure(*, model_id: str, data: str) -> dict:
    model = load_model(model_id)
    dataset = load_bundled_subset() if data == "bundled" else load_fashion_mnist(allow_download=False)
    print(f"{model.label} on {dataset.describe()}", file=sys.stderr, flush=True)
    rows = [{"config": "fp32", "top1": top1(model.module, dataset), "seconds": 0.0}]
    for label, spec in CONFIGS.items():
        started = time.perf_counter()
        result = compress(model=model, spec=spec, dataset=dataset)
        rows.append({"config": label, "top1": top1(result.module, dataset), "seconds": time.perf_counter() - started})
        print(f"  {label}: {rows[-1]['top1']:.2%}", file=sys.stderr, flush=True)
    table = with_int8_snr(module=model.module, table=channel_range_table(module=model.module))
    return {
        "model": model_id,
        "test_images": len(dataset.test),
        "data": dataset.describe(),
        "threads": torch.get_num_threads(),
        "accuracy": rows,
        "layers": table.to_dict(orient="records"),
        "by_kind": spread_by_kind(table).to_dict(orient="records"),
        "snr_by_kind": table.groupby("kind")[["snr_per_tensor_db", "snr_per_channel_db"]].median().reset_index()
        .to_dict(orient="records"),
    }


def markdown(report: dict) -> str:
    fp32 = report["accuracy"][0]["top1"]
    lines = [f"{report['model']}, top-1 on {report['test_images']:,} test images", "",
             "| config | top-1 | vs fp32 |", "|---|---:|---:|"]
    lines += [f"| {r['config']} | {r['top1']:.2%} | {100 * (r['top1'] - fp32):+.2f} pts |" for r in report["accuracy"]]
    lines += ["", "| conv kind | layers | spread (max ÷ median channel) | median channel's int8 levels | "
              "narrowest channel's levels | weight SNR per tensor | per channel |", "|---|---:|---:|---:|---:|---:|---:|"]
    snr = {r["kind"]: r for r in report["snr_by_kind"]}
    for r in report["by_kind"]:
        s = snr[r["kind"]]
        lines.append(f"| {r['kind']} | {r['layers']} | {r['spread']:.1f}× | {r['median_levels']:.0f} of 127 | "
                     f"{r['smallest_levels']:.1f} | {s['snr_per_tensor_db']:.1f} dB | {s['snr_per_channel_db']:.1f} dB |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sample:fashion_mobilenet")
    parser.add_argument("--data", choices=("full", "bundled"), default="full",
                        help="full: the 10,000 test images (needs dataset-fashion-mnist); bundled: 2,500 of them")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write-manifest", action="store_true",
                        help="record the accuracies in sample_models/manifest.json (a sample model, --data full)")
    args = parser.parse_args()
    if args.write_manifest and (args.data != "full" or not args.model.startswith("sample:")):
        parser.error("--write-manifest needs a sample model (sample:NAME) and --data full")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    report = measure(model_id=args.model, data=args.data)
    RESULTS.mkdir(exist_ok=True)
    name = args.model.split(":")[1] + ("" if args.model.startswith("sample:") else "_weights")
    (RESULTS / f"granularity_lesson_{name}_{args.data}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    if args.write_manifest:
        write_manifest(report)


def write_manifest(report: dict) -> None:
    if report["test_images"] != 10_000:
        sys.exit(f"--write-manifest: measured on {report['test_images']:,} images, not the 10,000 of the test set.")
    path = SAMPLE_MODELS_DIR / "manifest.json"
    manifest = json.loads(path.read_text())
    name = report["model"].split(":", 1)[1]
    manifest[name][MANIFEST_KEY] = {r["config"]: round(r["top1"], 4) for r in report["accuracy"]}
    manifest[name]["channel_range_spread_by_kind"] = {
        r["kind"]: {"layers": r["layers"], "spread": round(r["spread"], 2), "median_levels": round(r["median_levels"], 1)}
        for r in report["by_kind"]
    }
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {MANIFEST_KEY} of {name} to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
