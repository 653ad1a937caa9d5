"""Summaries of a record's per-layer table (core.store.layers_frame): coverage, and which layer to look at first."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Coverage:
    compressed_layers: int
    total_layers: int
    weight_share: float  # share of all weights that sit in compressed layers, 0..1


def _compressed_mask(layers: pd.DataFrame) -> pd.Series:
    return layers["compressed"].fillna(False).astype(bool)


def coverage(layers: pd.DataFrame) -> Coverage:
    """How many weight layers were compressed and what share of the weights they hold."""
    mask = _compressed_mask(layers)
    total = float(layers["params"].sum())
    share = float(layers.loc[mask, "params"].sum()) / total if total > 0 else 0.0
    return Coverage(compressed_layers=int(mask.sum()), total_layers=len(layers), weight_share=share)


def default_layer(layers: pd.DataFrame, *, available: Collection[str]) -> str | None:
    """The biggest compressed layer among `available` (else the biggest available layer): the most telling one."""
    if not available:
        return None
    compressed = layers[_compressed_mask(layers)]
    ranked = (compressed if not compressed.empty else layers).sort_values("params", ascending=False)["name"]
    return next((name for name in ranked if name in available), next(iter(available)))


def weight_layer_table(layers: Mapping[str, Any], *, method: Any) -> pd.DataFrame:
    """One row per weight layer of a model (name → module, as core.compress.layers.weight_layers gives them):
    type, shape, weight count, share of all weights, and whether `method` (a MethodDescriptor) would compress
    it with its default settings — with the reason when it would not."""
    total = max(1, sum(int(layer.weight.numel()) for layer in layers.values()))
    rows = []
    for name, layer in layers.items():
        count = int(layer.weight.numel())
        yes, reason = method.compressed_by_default(count, layer=layer, name=name)
        rows.append({
            "layer": name,
            "type": type(layer).__name__,
            "shape": "×".join(map(str, layer.weight.shape)),
            "weights": count,
            "share of weights": count / total,
            "compressed by default?": "yes" if yes else f"no — {reason}",
        })
    return pd.DataFrame(rows, columns=["layer", "type", "shape", "weights", "share of weights", "compressed by default?"])


def layers_compressed_by_default(layers: Mapping[str, Any], *, method: Any, spec: Any = None) -> list[str]:
    """The names of the layers `method` (a MethodDescriptor) would compress with `spec` (default: its defaults)."""
    return [
        name for name, layer in layers.items()
        if method.compressed_by_default(int(layer.weight.numel()), spec, layer=layer, name=name)[0]
    ]


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number  # NaN: not recorded


def storage_bits_words(row: Mapping[str, Any]) -> tuple[str, str]:
    """(bits of each stored value, how that becomes the layer's bits per weight) for one row of a record's layer
    table, so that 'Bits' and 'Bits / weight' never seem to contradict each other: a 50 %-pruned fp16 layer stores
    16-bit values for half of its weights plus a 1-bit mask for every weight, 9 bits per weight."""
    per_weight = _number(row.get("bits_per_weight"))
    bits = _number(row.get("bits"))
    if not row.get("compressed"):
        return "16 (fp16)", "Not compressed: every weight is stored as a 16-bit float."
    sparsity = _number(row.get("sparsity")) or 0.0
    value_bits = bits if bits is not None else 16.0
    value = f"{value_bits:g}" + (" (fp16)" if bits is None or (value_bits == 16 and sparsity) else "")
    if per_weight is None:
        return value, f"Each stored value takes {value_bits:g} bits."
    if sparsity > 0:
        kept = 1.0 - sparsity
        extra = per_weight - kept * value_bits - 1.0
        tables = f" + {extra:.2f} for look-up tables and scales" if extra > 0.005 else ""
        return value, (f"{per_weight:.2f} bits / weight = {kept:.0%} of the weights kept × {value_bits:g}-bit values "
                       f"({kept * value_bits:.2f}) + a 1-bit mask for every weight{tables}.")
    extra = per_weight - value_bits
    shared = (_number(row.get("n_luts")) or 0) + (_number(row.get("n_scales")) or 0)
    tables = ""
    if extra > 0.005:
        tables = f" + {extra:.2f} for look-up tables and scales shared by the layer"
    elif shared:
        tables = " + its look-up tables and scales (under 0.01 bits per weight: shared by many weights)"
    return value, f"{per_weight:.2f} bits / weight = {value_bits:g}-bit values{tables}."
