"""What to draw over a layer's weight histogram: the LUT, the quantization grid or the pruning threshold.

The stored arrays of one layer (core.measure.weights, keys ``<layer>/<kind>``) hold the original and compressed
weight samples plus the method's own LUT, scales or threshold; this module turns them into the overlays the Layers page draws.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


def layer_arrays(flat: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """``{"conv1/original": a, "conv1/lut": b}`` → ``{"conv1": {"original": a, "lut": b}}``."""
    grouped: dict[str, dict[str, np.ndarray]] = {}
    for key, values in flat.items():
        layer, _, kind = key.rpartition("/")
        grouped.setdefault(layer, {})[kind] = values
    return grouped


def quantization_levels(arrays: Mapping[str, np.ndarray], bits: float | None) -> tuple[np.ndarray | None, str]:
    """The representable values of one channel, (q − zero_point) × scale for every integer q of a signed `bits`
    type, and a note naming the channel when there are several scales (the one with the median scale)."""
    scales = arrays.get("scale")
    if scales is None or scales.size == 0 or not bits:
        return None, ""
    scales = np.abs(scales.astype(np.float64).ravel())
    position = int(np.argsort(scales)[len(scales) // 2])
    scale = float(scales[position])
    zero_points = arrays.get("zero_point")
    zero = float(zero_points.ravel()[position]) if zero_points is not None and zero_points.size > position else 0.0
    levels = np.arange(-(2 ** (int(bits) - 1)), 2 ** (int(bits) - 1))
    note = "" if len(scales) == 1 else f"grid of the channel/block with the median scale (one of {len(scales):,} scales)"
    return (levels - zero) * scale, note


@dataclass(frozen=True)
class HistogramOverlays:
    """The reference lines of one layer's histogram and the notes that explain them."""

    lut: np.ndarray | None = None
    levels: np.ndarray | None = None  # the representable values of a linear quantization
    threshold: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def histogram_overlays(arrays: Mapping[str, np.ndarray], *, bits: float | None, params: int) -> HistogramOverlays:
    """The LUT (unless it is in per-channel-normalised units), the quantization levels, the threshold, and notes for a layer
    of `params` weights whose stored sample is ``arrays["original"]``."""
    notes: list[str] = []
    lut = arrays.get("lut")
    if lut is not None and "per_channel_scale" in arrays:
        notes.append("LUT values are in per-channel-normalised units, so they are not drawn; the coloured histogram "
                     "shows the effective values (LUT × channel scale).")
        lut = None
    levels, levels_note = quantization_levels(arrays, bits)
    if levels_note:
        notes.append(levels_note)
    stored = arrays.get("threshold")
    threshold = float(stored.ravel()[0]) if stored is not None and stored.size else None
    sample = arrays.get("original")
    if sample is not None and sample.size < int(params):
        notes.append(f"A seeded sample of {sample.size:,} of the {int(params):,} weights is shown.")
    return HistogramOverlays(lut=lut, levels=levels, threshold=threshold, notes=tuple(notes))
