"""Layer summaries: coverage of a layer table, the first layer to show, and default eligibility per method."""

from __future__ import annotations

import pandas as pd
import pytest

from core.compress.layers import weight_layers
from core.compress.registry import method_descriptor
from core.measure.layer_summary import coverage, default_layer, layers_compressed_by_default, weight_layer_table
from core.models.architectures import SAMPLE_ARCHITECTURES

LAYERS = pd.DataFrame({
    "name": ["a", "b", "c"],
    "params": [100, 700, 200],
    "compressed": [False, True, None],
})


def test_coverage_counts_layers_and_weight_share() -> None:
    covered = coverage(LAYERS)
    assert (covered.compressed_layers, covered.total_layers) == (1, 3)
    assert covered.weight_share == pytest.approx(0.7)


def test_default_layer_is_the_biggest_compressed_one_available() -> None:
    assert default_layer(LAYERS, available=["a", "b", "c"]) == "b"
    assert default_layer(LAYERS, available=["a", "c"]) == "a"  # no compressed layer has weights: first available
    assert default_layer(LAYERS, available=[]) is None


@pytest.fixture(scope="module")
def cnn_layers() -> dict:
    return weight_layers(SAMPLE_ARCHITECTURES["fashion_cnn"]())


def test_threshold_differs_per_method(cnn_layers: dict) -> None:
    palettize = layers_compressed_by_default(cnn_layers, method=method_descriptor("palettize"))
    w8a8 = layers_compressed_by_default(cnn_layers, method=method_descriptor("quantize_activations"))
    assert "features.0" not in palettize  # 288 weights ≤ the weight-only methods' threshold of 2,048
    assert "features.0" in w8a8  # W8A8's threshold is 0: every layer
    dynamic = layers_compressed_by_default(cnn_layers, method=method_descriptor("torch_dynamic"))
    assert dynamic == [n for n, layer in cnn_layers.items() if type(layer).__name__ == "Linear"]


def test_weight_layer_table_says_why_not(cnn_layers: dict) -> None:
    table = weight_layer_table(cnn_layers, method=method_descriptor("palettize"))
    assert list(table["layer"]) == list(cnn_layers)
    assert table["share of weights"].sum() == pytest.approx(1.0)
    first = table.set_index("layer").loc["features.0", "compressed by default?"]
    assert first.startswith("no — ") and "weight_threshold" in first


def test_storage_bits_words_reconcile_value_bits_and_bits_per_weight() -> None:
    from core.measure.layer_summary import storage_bits_words

    pruned = {"compressed": True, "bits": 16, "bits_per_weight": 9.0, "sparsity": 0.5, "n_luts": 0, "n_scales": 0}
    assert storage_bits_words(pruned) == (
        "16 (fp16)", "9.00 bits / weight = 50% of the weights kept × 16-bit values (8.00) + a 1-bit mask for every weight.")
    both = {**pruned, "bits": 4, "bits_per_weight": 3.2, "n_luts": 1}  # pruned, then the kept values palettized
    assert storage_bits_words(both)[1].endswith("× 4-bit values (2.00) + a 1-bit mask for every weight + 0.20 for "
                                                "look-up tables and scales.")
    assert storage_bits_words({"compressed": False, "bits_per_weight": 16.0}) == (
        "16 (fp16)", "Not compressed: every weight is stored as a 16-bit float.")
    palettized = {"compressed": True, "bits": 2, "bits_per_weight": 2.25, "sparsity": 0.0, "n_luts": 8}
    assert storage_bits_words(palettized) == (
        "2", "2.25 bits / weight = 2-bit values + 0.25 for look-up tables and scales shared by the layer.")
