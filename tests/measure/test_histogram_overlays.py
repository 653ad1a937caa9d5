"""Histogram overlays: the quantization levels of the median-scale channel, the LUT, the threshold and the notes."""

from __future__ import annotations

import numpy as np
import pytest

from core.measure.histogram_overlays import histogram_overlays, layer_arrays, quantization_levels


def test_layer_arrays_groups_by_layer() -> None:
    flat = {"features.0/original": np.zeros(2), "features.0/lut": np.ones(4), "block.conv/original": np.ones(3)}
    grouped = layer_arrays(flat)
    assert set(grouped) == {"features.0", "block.conv"}
    assert set(grouped["features.0"]) == {"original", "lut"}


def test_int4_levels_of_the_median_scale_channel() -> None:
    arrays = {"scale": np.array([0.1, -0.3, 0.2]), "zero_point": np.array([0.0, 1.0, 2.0])}
    levels, note = quantization_levels(arrays, 4)
    assert len(levels) == 16
    # median |scale| is 0.2 (third channel, zero point 2): values (q - 2) * 0.2 for q in -8..7
    assert levels[0] == pytest.approx(-10 * 0.2) and levels[-1] == pytest.approx(5 * 0.2)
    assert "one of 3 scales" in note


def test_no_levels_without_scales_or_bits() -> None:
    assert quantization_levels({}, 8) == (None, "")
    assert quantization_levels({"scale": np.array([0.5])}, None) == (None, "")
    levels, note = quantization_levels({"scale": np.array([0.5])}, 8)
    assert len(levels) == 256 and note == ""


def test_overlays_of_a_palettized_layer_with_per_channel_scale() -> None:
    arrays = {"original": np.zeros(100), "lut": np.linspace(-1, 1, 16), "per_channel_scale": np.ones(8)}
    overlays = histogram_overlays(arrays, bits=4, params=1000)
    assert overlays.lut is None and overlays.levels is None  # normalised LUT units are not drawn
    assert any("per-channel-normalised" in n for n in overlays.notes)
    assert any("100 of the 1,000 weights" in n for n in overlays.notes)


def test_overlays_of_a_pruned_layer() -> None:
    overlays = histogram_overlays({"original": np.zeros(10), "threshold": np.array([0.25])}, bits=None, params=10)
    assert overlays.threshold == pytest.approx(0.25) and overlays.lut is None and overlays.notes == ()
