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
