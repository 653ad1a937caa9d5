"""The granularity lesson on depthwise convs: why one int8 scale per tensor hurts MobileNets, in measured numbers.

The spread is measured live on the loaded model (core.measure.channel_ranges, BatchNorm folded as int8 kernels store
it); the accuracies come from the sample's manifest, where ``python -m bench.granularity_lesson --write-manifest``
records them (top-1 on the 10,000 Fashion-MNIST test images).
"""

from __future__ import annotations

import pandas as pd
from torch import nn

from core.measure.channel_ranges import channel_range_table

MANIFEST_KEY = "int8_granularity_top1_test_10k"
LESSON_SAMPLE = "sample:fashion_mobilenet"


def depthwise_layers(table: pd.DataFrame) -> list[str]:
    return table.loc[table["kind"] == "depthwise", "layer"].tolist()


def _levels(levels: float) -> str:
    """Levels as a reader takes them in: whole numbers from 10 up, one decimal below."""
    return f"{levels:.0f}" if levels >= 10 else f"{levels:.1f}"


def layer_note(*, table: pd.DataFrame, layer: str) -> str | None:
    """What one per-tensor scale does to this depthwise conv's channels (None: the layer is not depthwise)."""
    rows = table[(table["layer"] == layer) & (table["kind"] == "depthwise")]
    if rows.empty:
        return None
    row = rows.iloc[0]
    folded = " With its BatchNorm folded in (as int8 kernels store it), its" if row["batchnorm_folded"] else " Its"
    # Below half a level a channel's largest weight rounds to 0, and so does every other weight of that channel.
    zeroed = " — its weights all round to zero" if row["median_levels"] < 0.5 else ""
    return (
        f"{layer} is a depthwise conv: one 3×3 kernel per channel, {int(row['channels'])} channels.{folded} widest "
        f"channel range is {row['spread']:.1f}× the median channel's, so one int8 scale for the tensor leaves the "
        f"median channel {_levels(row['median_levels'])} of the 127 positive levels{zeroed} and the narrowest "
        f"{_levels(row['smallest_levels'])}."
    )


def _points(top1: float, fp32: float) -> str:
    return f"{100 * (top1 - fp32):+.2f} points"


def accuracy_note(manifest_entry: dict) -> str | None:
    """The measured top-1 of the sample under int8 with per-channel vs per-tensor weight scales (None: not measured)."""
    numbers = manifest_entry.get(MANIFEST_KEY)
    if not numbers:
        return None
    fp32 = numbers["fp32"]
    images = manifest_entry.get("eval_images", 10_000)
    words = {"per-channel": "one int8 weight scale per channel", "per-tensor": "one per tensor"}
    parts = [
        f"{words[granularity]}: W8A8 {w8a8:.2%} ({_points(w8a8, fp32)}), PyTorch static int8 {static:.2%} "
        f"({_points(static, fp32)})"
        for granularity in words
        for w8a8, static in [(numbers[f"W8A8 {granularity} weights"], numbers[f"torch_static {granularity}"])]
    ]
    return f"Measured on the sample's {images:,} test images: fp32 {fp32:.2%}; " + "; ".join(parts) + "."


def lesson_notes(*, module: nn.Module, layer: str, manifest_entry: dict) -> list[str]:
    """The lines the granularity lesson adds for this model and layer: the depthwise conv's spread and the sample's
    measured accuracies, or — for a model without depthwise convs — where to see the effect."""
    table = channel_range_table(module=module)
    if table.empty or not depthwise_layers(table):
        return [
            "Depthwise convs (MobileNets) are where channel ranges tend to spread most: load the sample "
            "fashion_mobilenet and pick a blocks.N.depthwise.0 layer, or run Explore's preset "
            "'int8 weight scales: per channel vs per tensor' on it."
        ]
    note = layer_note(table=table, layer=layer)
    if note is None:
        widest = table[table["kind"] == "depthwise"].sort_values("spread").iloc[-1]
        note = (
            f"This model has {len(depthwise_layers(table))} depthwise convs; the most spread is {widest['layer']} "
            f"(widest channel range {widest['spread']:.1f}× the median): pick it to compare the two granularities."
        )
    accuracy = accuracy_note(manifest_entry)
    return [note] + ([accuracy] if accuracy else [])
