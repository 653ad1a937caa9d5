"""Lesson 7: the bytes of a real exported .mlpackage, per kind, against the product's size model."""

from __future__ import annotations

import math

import pytest

from core.compress.layers import weight_layers
from core.learn.artifact import read_artifact, where_the_bytes_go
from core.library_internals import WEIGHT_BLOB_HEADER_BYTES
from core.measure.size import path_size_bytes
from core.specs import PalettizeSpec, PruneSpec, QuantizeWeightsSpec


@pytest.fixture(scope="module")
def palettized(sample, tmp_path_factory):
    return where_the_bytes_go(model=sample, spec=PalettizeSpec(n_bits=4), out_dir=tmp_path_factory.mktemp("pal"))


def test_palettized_package_stores_exactly_the_modelled_indices_and_luts(sample, palettized):
    artifact = palettized.artifact
    stored = artifact.by_kind()
    large = [layer.weight.numel() for layer in weight_layers(sample.module).values() if layer.weight.numel() > 2048]
    assert stored["indices"] == sum(math.ceil(n * 4 / 8) for n in large)  # 4 bits per weight, packed
    assert stored["luts"] == len(large) * 16 * 2  # one LUT of 16 fp16 entries per layer
    assert stored["indices"] == palettized.theory.rounded_breakdown()["indices"]
    assert stored["luts"] == palettized.theory.rounded_breakdown()["luts"]
    # the package adds up: blob data + blob headers/alignment = weight.bin; + program + manifest = the folder
    assert artifact.total_bytes == path_size_bytes(artifact.path)
    assert artifact.data_bytes + artifact.blob_overhead_bytes + artifact.program_bytes == artifact.total_bytes
    assert artifact.blob_overhead_bytes >= WEIGHT_BLOB_HEADER_BYTES * len(artifact.blobs)
    assert abs(artifact.total_bytes / palettized.theory.total_bytes - 1) < 0.05


@pytest.mark.parametrize("spec,kinds", [
    (QuantizeWeightsSpec(dtype="int8"), ("quantized_weights", "scales")),
    (PruneSpec(target_sparsity=0.75), ("sparse_values", "masks")),
])
@pytest.mark.slow
def test_quantized_and_pruned_packages_match_the_size_model(sample, tmp_path, spec, kinds):
    made = where_the_bytes_go(model=sample, spec=spec, out_dir=tmp_path)
    rows = {row["kind"]: row for row in made.rows()}
    for kind in kinds:
        assert rows[kind]["artifact_bytes"] == rows[kind]["theory_bytes"] > 0, rows[kind]
    assert "indices" not in rows and "luts" not in rows


def test_reading_something_else_fails_clearly(tmp_path):
    with pytest.raises(Exception, match=r"\.mlmodel|not|No such"):
        read_artifact(tmp_path)
