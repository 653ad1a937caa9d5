"""One experiment end to end on real models: the record contract, JSON round trip, caching, cancellation."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data import DatasetError, load_bundled_subset
from core.experiment import (
    ExperimentOptions,
    baseline_evaluation,
    baseline_record,
    clear_caches,
    resolve_eval_data,
    run_experiment,
)
from core.jsonable import to_jsonable
from core.measure.latency import LatencySettings
from core.models.sources import LoadedModel, load_model
from core.progress import Cancelled, Progress
from core.records import EXPERIMENT_FIELDS
from core.specs import PalettizeSpec, TorchDynamicSpec
from tests.conftest import tiny_rgb_model as tiny_model

RECORD_KEYS = {
    "model", "model_label", "spec", "spec_summary", "method", "workflow", "created_at", "compress_seconds", "dataset",
    "dataset_source", "eval_images", "accuracy_meaningful", "accuracy_top1", "accuracy_top5", "baseline_accuracy_top1",
    "baseline_accuracy_top5", "per_class_accuracy", "baseline_per_class_accuracy", "class_names", "agreement_top1",
    "output_snr_db", "output_psnr_db", "flipped", "flipped_images", "size_bytes", "artifact_path", "artifact_kind",
    "size_fp32_bytes", "size_fp16_bytes", "theoretical_size_bytes", "size_breakdown", "bits_per_weight",
    "compression_ratio_fp16", "compression_ratio_fp32", "size_check", "latency_ms_p50", "latency_ms_p90",
    "baseline_latency_ms_p50", "baseline_latency_ms_p90", "latency_ratio", "latency", "latency_note",
    "peak_memory_bytes", "baseline_peak_memory_bytes", "threads", "machine", "layers", "notes", "calibration_source",
    "weights_path",
}
FAST_LATENCY = LatencySettings(threads=1, batch_sizes=(1, 4), warmup=1, min_repeats=3, max_repeats=5, seconds_per_batch_size=0.05)


@pytest.fixture(scope="module")
def fashion_cnn() -> LoadedModel:
    return load_model("sample:fashion_cnn")


@pytest.fixture(scope="module")
def subset():
    return load_bundled_subset()


@pytest.fixture
def options(tmp_path: Path) -> ExperimentOptions:
    clear_caches()
    return ExperimentOptions(eval_limit=200, latency=FAST_LATENCY, cache_dir=tmp_path / "cache")


def test_palettize_record_is_complete_and_round_trips_json(fashion_cnn, subset, options, tmp_path: Path) -> None:
    before = {k: v.clone() for k, v in fashion_cnn.module.state_dict().items()}
    seen: list[float] = []
    record = run_experiment(
        model=fashion_cnn, spec=PalettizeSpec(n_bits=4), dataset=subset, artifacts_dir=tmp_path / "run",
        progress=Progress(lambda f, m: seen.append(f)), options=options,
    )
    assert set(record) >= RECORD_KEYS
    assert list(record) == list(EXPERIMENT_FIELDS)  # the one declared schema, nothing more
    assert json.loads(json.dumps(record, allow_nan=False)) == record
    assert all(torch.equal(before[k], v) for k, v in fashion_cnn.module.state_dict().items())  # input untouched
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)  # one monotone bar for the whole run
    # quality: real fractions on 200 real test images
    assert record["eval_images"] == 200 and record["accuracy_meaningful"] is True
    assert 0.8 < record["baseline_accuracy_top1"] <= 1.0 and 0.7 < record["accuracy_top1"] <= 1.0
    assert record["accuracy_top5"] >= record["accuracy_top1"]
    assert len(record["per_class_accuracy"]) == 10 and record["class_names"][0] == "T-shirt/top"
    assert 0.9 < record["agreement_top1"] <= 1.0 and 10 < record["output_snr_db"] < 60
    assert record["flipped"] == len(record["flipped_images"]) == round((1 - record["agreement_top1"]) * 200)
    # size: a real .mlpackage, ~4× smaller than the real fp16 package, matching the theoretical size
    artifact = Path(record["artifact_path"])
    assert record["artifact_kind"] == "mlpackage" and artifact.is_dir() and artifact.parent == tmp_path / "run"
    assert 3.0 < record["compression_ratio_fp16"] < 4.2
    assert record["size_check"]["ok"] is True, record["size_check"]
    assert record["size_breakdown"]["indices"] > 10 * record["size_breakdown"]["uncompressed"]
    assert 4.0 <= record["bits_per_weight"] < 4.6
    assert "decompressed" in record["latency_note"]
    assert record["latency"]["batches"]["4"]["candidate"]["repeats"] >= 3
    assert record["latency_ms_p50"] <= record["latency_ms_p90"] and record["threads"] == 1
    assert record["peak_memory_bytes"] > 0
    # palettized weights run decompressed through the baseline's graph: latency is confirmed briefly, not re-measured
    # in full (unless the confirmation disagrees), and peak memory is the baseline's by construction
    confirmed = record["latency"]["mode"] == "confirmation"
    assert any(n.startswith("Latency: a short confirmation" if confirmed else "Latency: the short confirmation disagreed")
               for n in record["notes"])
    assert record["peak_memory_bytes"] == record["baseline_peak_memory_bytes"]
    assert any(n.startswith("Peak memory: the baseline's") for n in record["notes"])
    assert "Evaluated on 200 of the" in " ".join(record["notes"])  # a class-balanced sample, said so
    phases = record["phase_seconds"]
    phases_run = {"compress", "baseline", "export", "fp16_baseline", "evaluate", "export_wait", "latency", "memory"}
    assert phases_run | {"weights", "artifact_check"} <= set(phases)  # export_wait: the export ran on the helper thread
    # the shipped package holds the evaluated weights (decoded from its LUTs), read back in less than the export took
    assert record["artifact_weights_match"] is True and record["artifact_weights_check"]["max_ulps"] == 0.0
    assert phases["artifact_check"] < phases["export"]
    assert all(v >= 0 for v in phases.values()) and phases["export"] > 0
    # every weight-bearing layer is reported, with its stored bits
    assert len(record["layers"]) == 6
    assert all("bits_per_weight" in layer["extra"] for layer in record["layers"])
    with np.load(record["weights_path"], allow_pickle=False) as npz:
        compressed = [k for k in npz.files if k.endswith("/compressed")]
        assert compressed and all(len(np.unique(npz[k])) <= 16 for k in compressed if npz[k.replace("compressed", "original")].size > 2048)


def test_model_without_dataset_uses_synthetic_inputs_and_int8_torchscript(options, tmp_path: Path) -> None:
    model = tiny_model()
    record = run_experiment(
        model=model, spec=TorchDynamicSpec(), dataset=None, artifacts_dir=tmp_path / "run", options=options
    )
    assert record["accuracy_meaningful"] is False and record["accuracy_top1"] is None
    assert record["dataset"] == "synthetic" and record["eval_images"] == 64
    assert record["agreement_top1"] > 0.8 and record["artifact_kind"] == "torchscript"
    assert Path(record["artifact_path"]).is_file() and record["size_bytes"] > 0
    assert record["size_breakdown"]["quantized_weights"] == 8 * 8 * 8 * 64 + 64 * 5
    assert record["artifact_weights_match"] is True  # int8 Linear weights unpacked from the saved TorchScript
    assert record["artifact_weights_check"]["layers_compared"] == 3 and record["artifact_weights_check"]["max_abs_diff"] == 0
    assert "Linear" in record["latency_note"] and record["latency_ratio"] > 0
    # int8 kernels are a different computation: timed in full, memory profiled on its own
    assert record["latency"]["mode"] == "full" and not any(n.startswith("Latency: a short") for n in record["notes"])
    assert not any(n.startswith("Peak memory: the baseline's") for n in record["notes"])


def test_synthetic_evaluation_inputs_never_repeat_calibration_inputs(options) -> None:
    from core.compress.context import CompressionContext
    from core.data import synthetic_inputs

    model = tiny_model()
    data = resolve_eval_data(model=model, dataset=None, options=options)
    evaluation = torch.cat(data.batches)
    context = CompressionContext(model=model, dataset=None, progress=Progress(), original=model.module)
    calibration = torch.cat([x for x, _ in context.calibration_batches(samples=len(evaluation), seed=options.seed)])
    assert evaluation.shape == calibration.shape and not torch.isclose(evaluation, calibration).any()
    timing = synthetic_inputs(input_shape=model.input_shape, count=len(evaluation), seed=options.seed, purpose="timing")
    assert not torch.isclose(evaluation, timing).any() and not torch.isclose(calibration, timing).any()


@pytest.mark.slow
def test_timing_guard_holds_only_the_latency_phase_and_skip_known_can_be_turned_off(
    fashion_cnn, subset, options, tmp_path: Path
) -> None:
    import contextlib

    events: list[str] = []

    @contextlib.contextmanager
    def guard():
        events.append("enter")
        yield
        events.append("exit")

    def watch(fraction: float, message: str) -> None:
        events.append("latency" if message.startswith("Latency") else "other")

    full = dataclasses.replace(options, timing_guard=guard, skip_known=False, overlap_export=False)
    record = run_experiment(model=fashion_cnn, spec=PalettizeSpec(n_bits=4), dataset=subset,
                            artifacts_dir=tmp_path / "run", progress=Progress(watch), options=full)
    assert events.count("enter") == events.count("exit") == 1
    inside = events[events.index("enter") + 1 : events.index("exit")]
    assert inside and set(inside) == {"latency"}  # nothing but the timing ran while the lock was held
    assert record["latency"]["mode"] == "full" and record["peak_memory_bytes"] > 0
    assert not any(n.startswith(("Latency: a short", "Peak memory: the baseline's")) for n in record["notes"])
    assert "export_wait" not in record["phase_seconds"]  # the export ran inline


def test_cancel_leaves_nothing_half_written(fashion_cnn, subset, options, tmp_path: Path) -> None:
    progress = Progress()

    def cancel_after_export(fraction: float, message: str) -> None:
        if message.startswith("Evaluating compressed"):
            progress.cancel()

    progress.callback = cancel_after_export
    run_dir = tmp_path / "run"
    with pytest.raises(Cancelled):
        run_experiment(model=fashion_cnn, spec=PalettizeSpec(n_bits=6), dataset=subset, artifacts_dir=run_dir, progress=progress, options=options)
    assert not run_dir.exists()


def test_baseline_record_fields_and_cache(fashion_cnn, subset, options) -> None:
    start = time.perf_counter()
    record = baseline_record(model=fashion_cnn, dataset=subset, eval_limit=300, options=options)
    first = time.perf_counter() - start
    for key in ("model", "params", "accuracy_top1", "accuracy_top5", "eval_images", "dataset_source", "size_fp32_bytes",
                "size_fp16_bytes", "latency_ms_p50", "peak_memory_bytes", "threads", "machine"):
        assert record[key] is not None, key
    assert record["eval_images"] == 300 and record["params"] == fashion_cnn.params
    from core.progress import library_version_warnings

    assert all(line in record["notes"] for line in library_version_warnings())  # kept in the record, said once on screen
    assert record["size_fp32_bytes"] == 4 * sum(t.numel() for t in fashion_cnn.module.state_dict().values() if t.is_floating_point())
    assert ".mlpackage" in record["size_fp16_source"]
    assert 0.45 * record["size_fp32_bytes"] < record["size_fp16_bytes"] < 0.55 * record["size_fp32_bytes"]
    start = time.perf_counter()
    again = baseline_record(model=fashion_cnn, dataset=subset, eval_limit=300, options=options)
    assert again == record and time.perf_counter() - start < first / 5
    # the logits are also cached on disk: a fresh process (simulated by clearing memory) re-reads them
    options = dataclasses.replace(options, eval_limit=300)
    data = resolve_eval_data(model=fashion_cnn, dataset=subset, options=options)
    clear_caches()
    assert list((options.cache_root() / "baseline_eval").glob("*.npz"))
    cached = baseline_evaluation(model=fashion_cnn, data=data, options=options)
    assert cached.logits.shape == (300, 10)


def test_dataset_that_does_not_fit_the_model_is_refused(options) -> None:
    with pytest.raises(DatasetError, match="expects"):
        resolve_eval_data(model=tiny_model(), dataset=load_bundled_subset(), options=options)


def test_to_jsonable_makes_plain_json() -> None:
    value = {"a": float("inf"), "b": np.float32(1.5), "c": (1, 2), "d": Path("/x"), "e": torch.tensor(3)}
    assert to_jsonable(value) == {"a": None, "b": 1.5, "c": [1, 2], "d": "/x", "e": 3}
    more = {1: np.array([1.0, np.nan]), "s": {3}, "t": torch.tensor([1, 2]), "n": np.int64(7), "o": object}
    assert to_jsonable(more) == {"1": [1.0, None], "s": [3], "t": [1, 2], "n": 7, "o": "<class 'object'>"}


@pytest.mark.slow
def test_validation_images_come_from_the_training_pool_and_are_reported_beside_the_test_numbers(tmp_path) -> None:
    """A search chooses on validation images: they never overlap the evaluation images, and the record carries
    both the validation and the test numbers of both models."""
    from core.measure.quality import topk_accuracy

    dataset = load_bundled_subset()
    model = load_model("sample:fashion_cnn")
    options = ExperimentOptions(eval_limit=400, validation_images=300, measure_latency=False, measure_memory=False,
                                export=False, cache_dir=tmp_path / "cache")
    record = run_experiment(model=model, spec=PalettizeSpec(n_bits=2), dataset=dataset, artifacts_dir=tmp_path / "run",
                            options=options)
    validation = dataset.validation_split(size=300)
    test = dataset.eval_split(limit=400)
    as_bytes = lambda split: {image.numpy().tobytes() for image in split.images}  # noqa: E731
    assert not as_bytes(validation) & as_bytes(dataset.test)  # no validation image is a test image
    assert torch.bincount(validation.labels).tolist() == [30] * 10  # class-balanced
    assert record["validation_images"] == 300 and record["eval_images"] == len(test) == 400
    assert "training pool" in record["validation_source"] and "never test images" in record["validation_source"]
    with torch.no_grad():
        logits = model.module(dataset.normalize(validation.images))
    assert record["baseline_validation_accuracy_top1"] == pytest.approx(topk_accuracy(logits=logits,
                                                                                       labels=validation.labels, k=1))
    for key in ("validation_accuracy_top1", "accuracy_top1", "baseline_accuracy_top1"):
        assert 0.0 < record[key] <= 1.0
    assert record["validation_accuracy_top1"] != record["accuracy_top1"]  # two different image sets
    with pytest.raises(ValueError, match="validation_images must be a positive number"):
        ExperimentOptions(validation_images=0)


def test_one_bar_never_moves_back_when_two_threads_report_into_neighbouring_ranges() -> None:
    """The export reports from a helper thread into a later range while the evaluation finishes an earlier one: the
    bar the user sees holds its furthest point, and every message still arrives."""
    from core.progress import Progress

    seen: list[tuple[float, str]] = []
    bar = Progress(lambda f, m: seen.append((f, m)))
    evaluation, export = bar.sub(0.5, 0.8), bar.sub(0.8, 0.85)
    evaluation.update(0.5, "evaluating")
    export.update(0.07, "export: tracing")  # 0.8035
    evaluation.update(1.0, "evaluation done")  # 0.8: would move the bar back
    export.update(1.0, "export saved")
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(0.85)
    assert [m for _, m in seen] == ["evaluating", "export: tracing", "evaluation done", "export saved"]
