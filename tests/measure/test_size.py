"""Theoretical size from hand-computed layer reports, real bytes on disk, the ±5 % check and int8 payloads."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from core.compress.result import LayerReport
from core.measure.size import (
    TORCHSCRIPT_FORMAT,
    container_overhead_bytes,
    float_param_count,
    layer_bits_per_weight,
    layer_storage_bits,
    module_payload_size,
    path_size_bytes,
    size_check,
    theoretical_size,
)


def _lut_layer() -> LayerReport:
    # 64×32×3×3 conv = 18,432 weights, 4-bit per-tensor palettization: 1 LUT of 16 fp16 entries.
    return LayerReport(
        name="conv", type="Conv2d", shape=(64, 32, 3, 3), params=18_432, compressed=True, method="palettize",
        bits=4, granularity="per_tensor", n_luts=1, lut_entries=16, lut_bits=16,
    )


def test_theoretical_size_of_a_hand_computed_lut_layer() -> None:
    layer = _lut_layer()
    bits = layer_storage_bits(layer)
    assert bits["indices"] == 18_432 * 4
    assert bits["luts"] == 16 * 16
    # 64 biases + 4×64 BatchNorm values stay fp16 alongside the layer
    estimate = theoretical_size(layers=[layer], total_float_params=18_432 + 64 + 256)
    assert estimate.breakdown["indices"] == 9216
    assert estimate.breakdown["luts"] == 32
    assert estimate.breakdown["uncompressed"] == (64 + 256) * 2
    assert estimate.total_bytes == 9216 + 32 + 640
    assert estimate.bits_per_weight == pytest.approx((18_432 * 4 + 256) / 18_432)
    assert estimate.nominal_bits_per_weight == 4


def test_grouped_vector_lut_pruned_and_quantized_layers() -> None:
    grouped = LayerReport(
        name="g", type="Conv2d", shape=(64, 32, 3, 3), params=18_432, compressed=True, method="palettize", bits=4,
        granularity="per_grouped_channel", n_luts=8, lut_entries=16, lut_bits=8, n_scales=64, extra={"cluster_dim": 2},
    )
    bits = layer_storage_bits(grouped)
    assert bits["indices"] == 9216 * 4  # one index per pair of weights
    assert bits["luts"] == 8 * 16 * 2 * 8
    assert bits["scales"] == 64 * 16
    pruned = LayerReport(name="p", type="Linear", shape=(100, 100), params=10_000, compressed=True, method="prune", sparsity=0.75)
    bits = layer_storage_bits(pruned)
    assert bits["masks"] == 10_000 and bits["sparse_values"] == 2_500 * 16
    joint = LayerReport(
        name="j", type="Linear", shape=(100, 100), params=10_000, compressed=True, method="prune+palettize", bits=2,
        sparsity=0.5, n_luts=1, lut_entries=4,
    )
    bits = layer_storage_bits(joint)
    assert bits["masks"] == 10_000 and bits["indices"] == 5_000 * 2 and bits["sparse_values"] == 0
    int4 = LayerReport(
        name="q", type="Linear", shape=(64, 64), params=4096, compressed=True, method="quantize_weights", bits=4,
        n_scales=128, n_zero_points=128,
    )
    bits = layer_storage_bits(int4)
    assert (bits["quantized_weights"], bits["scales"], bits["zero_points"]) == (4096 * 4, 128 * 16, 128 * 8)
    skipped = LayerReport(name="s", type="Conv2d", shape=(8, 1, 3, 3), params=72, compressed=False, reason="below weight_threshold")
    assert layer_storage_bits(skipped)["uncompressed"] == 72 * 16
    assert layer_storage_bits(skipped, TORCHSCRIPT_FORMAT)["uncompressed"] == 72 * 32


def test_path_size_counts_files_and_package_directories(tmp_path: Path) -> None:
    file = tmp_path / "model.pt"
    file.write_bytes(b"x" * 1234)
    package = tmp_path / "m.mlpackage"
    (package / "Data" / "com.apple.CoreML" / "weights").mkdir(parents=True)
    (package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").write_bytes(b"w" * 10_000)
    (package / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(b"p" * 700)
    (package / "Manifest.json").write_bytes(b"m" * 300)
    assert path_size_bytes(file) == 1234
    assert path_size_bytes(package) == 11_000
    assert container_overhead_bytes(package) == 1000
    shutil.rmtree(package)
    with pytest.raises(FileNotFoundError, match=r"m\.mlpackage"):
        path_size_bytes(package)


def test_size_check_within_tolerance_and_explains_overhead(tmp_path: Path) -> None:
    assert size_check(artifact_bytes=1040, theoretical_bytes=1000)["ok"] is True
    package = tmp_path / "small.mlpackage"
    (package / "weights").mkdir(parents=True)
    (package / "weights" / "weight.bin").write_bytes(b"w" * 1000)
    (package / "model.mlmodel").write_bytes(b"p" * 400)
    check = size_check(artifact_bytes=1400, theoretical_bytes=1000, artifact_path=package)
    assert check["ok"] is False and check["ratio"] == pytest.approx(1.4)
    assert "overhead" in check["note"]
    smaller = size_check(artifact_bytes=800, theoretical_bytes=1000)
    assert smaller["ok"] is False and "smaller" in smaller["note"]


def test_int8_module_payload_matches_saved_torchscript(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 10)).eval()
    assert float_param_count(model) == 256 * 512 + 512 + 512 * 10 + 10
    quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    estimate = module_payload_size(quantized)
    assert estimate.breakdown["quantized_weights"] == 256 * 512 + 512 * 10
    assert estimate.breakdown["uncompressed"] == (512 + 10) * 4  # fp32 biases
    assert estimate.bits_per_weight == pytest.approx(8.0, abs=0.01)
    path = tmp_path / "q.pt"
    torch.jit.save(torch.jit.script(quantized), str(path))
    assert zipfile.is_zipfile(path)
    ratio = path_size_bytes(path) / estimate.total_bytes
    assert 1.0 <= ratio < 1.15  # the zip adds code and pickles around the raw tensors


# --------------------------------------------------------------------------- bits per weight of a stored layer


def _stored(**fields) -> dict:
    """A layer as records store it (LayerReport.to_dict), possibly from an older record with fields missing."""
    return {"name": "layer", "type": "Conv2d", "shape": [256, 3136], "params": 802_816, **fields}


def test_layer_bits_per_weight_of_uncompressed_and_empty_layers() -> None:
    assert layer_bits_per_weight(_stored(compressed=False, reason="below weight_threshold")) == 16.0
    assert layer_bits_per_weight(_stored(params=0, compressed=True, bits=4)) is None
    assert layer_bits_per_weight(_stored(compressed=True, method="quantize_weights", bits=None)) is None


def test_layer_bits_per_weight_prefers_the_recorded_value() -> None:
    layer = _stored(compressed=True, method="palettize", bits=4, extra={"bits_per_weight": 4.25})
    assert layer_bits_per_weight(layer) == 4.25


def test_layer_bits_per_weight_counts_luts_scales_and_masks() -> None:
    # 4-bit indices + one fp16 LUT of 16 entries spread over 802,816 weights (fields an old record lacks default).
    palettized = _stored(compressed=True, method="palettize", bits=4, n_luts=1, lut_entries=16, lut_bits=16)
    assert layer_bits_per_weight(palettized) == pytest.approx(4 + 16 * 16 / 802_816)
    # pruning alone: a 1-bit mask over every position plus the surviving fp16 values
    pruned = _stored(compressed=True, method="prune", bits=None, sparsity=0.75)
    assert layer_bits_per_weight(pruned) == pytest.approx(1 + 16 * 0.25)
    # int8 per channel: 256 fp16 scales and 256 int8 zero-points, as the Core ML file stores them
    quantized = _stored(compressed=True, method="quantize_weights", bits=8, n_scales=256, n_zero_points=256)
    assert layer_bits_per_weight(quantized) == pytest.approx(8 + (256 * 16 + 256 * 8) / 802_816)
    # prune → palettize: mask + indices for the survivors + the LUT
    joint = _stored(compressed=True, method="prune+palettize", bits=2, sparsity=0.5, n_luts=1, lut_entries=4)
    assert layer_bits_per_weight(joint) == pytest.approx(1 + 2 * 0.5 + 4 * 16 / 802_816)


def test_layer_bits_per_weight_agrees_with_the_theoretical_size() -> None:
    layer = _lut_layer()
    estimate = theoretical_size(layers=[layer], total_float_params=layer.params)
    assert layer_bits_per_weight(layer.to_dict()) == pytest.approx(estimate.bits_per_weight)


def test_the_size_model_reads_each_registered_method_storage_without_importing_the_engine() -> None:
    """core.measure sits below core.compress: each method's descriptor declares its storage kind to the size
    model when it registers; a process that loaded no method says n/a for a stored layer instead of guessing."""
    import subprocess
    import sys

    from core.compress import METHODS
    from core.measure.size import storage_kinds

    for name, descriptor in METHODS.items():
        assert storage_kinds(name) == {descriptor.storage}, name
    assert storage_kinds("prune+palettize") == {"sparse", "lut"} and storage_kinds("no_such_method") is None

    layer = {"name": "fc", "type": "Linear", "shape": [10, 400], "params": 4000, "compressed": True,
             "method": "palettize", "bits": 4, "n_luts": 1, "lut_entries": 16, "lut_bits": 16}
    probe = ("import json, sys; from core.measure.size import layer_bits_per_weight; "
             "print(json.dumps([layer_bits_per_weight(json.loads(sys.argv[1])), "
             "'core.compress' in sys.modules]))")
    alone = subprocess.run([sys.executable, "-c", probe, json.dumps(layer)], capture_output=True, text=True,
                           check=True, cwd=Path(__file__).resolve().parents[2])
    assert json.loads(alone.stdout.splitlines()[-1]) == [None, False]
    with_engine = subprocess.run([sys.executable, "-c", "import core.compress; " + probe, json.dumps(layer)],
                                 capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[2])
    bits, _ = json.loads(with_engine.stdout.splitlines()[-1])
    assert bits == pytest.approx(4 + 16 * 16 / 4000)
