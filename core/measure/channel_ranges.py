"""How far apart the output channels' weight ranges are in each conv — why one int8 scale per tensor fails.

A per-tensor int8 scale is set by the largest |weight| of the whole tensor; a channel whose own largest |weight|
is k times smaller is rounded on only ~127/k of the 127 positive levels. Depthwise convs (one 3×3 kernel per
channel, then a BatchNorm whose γ/σ differs per channel) spread their ranges far more than dense convs, so the
numbers here are measured on the weights as int8 conv kernels see them: with the following BatchNorm folded in.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import nn

from core.models.bn_folding import conv_bn_pairs, folded_weight

INT8_POSITIVE_LEVELS = 127


def conv_kind(conv: nn.Conv2d) -> str:
    """'depthwise' (one kernel per channel), 'pointwise' (1×1), 'grouped' or 'dense'."""
    if conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels:
        return "depthwise"
    if conv.groups > 1:
        return "grouped"
    return "pointwise" if conv.kernel_size == (1, 1) else "dense"


def channel_range_table(*, module: nn.Module, fold_batchnorm: bool = True) -> pd.DataFrame:
    """One row per Conv2d: its kind, channel count and how spread its channels' ranges are.

    Columns: layer, kind, channels, spread (largest ÷ median channel max|w|), median_levels (int8 levels the
    median channel spans under one per-tensor scale), smallest_levels (the same for the narrowest channel),
    batchnorm_folded.
    """
    pairs = conv_bn_pairs(module) if fold_batchnorm else {}
    rows = []
    for name, conv in module.named_modules():
        if not isinstance(conv, nn.Conv2d):
            continue
        bn_name = pairs.get(name)
        weight = folded_weight(module, name, bn_name) if bn_name else conv.weight.detach().float()
        channel_max = weight.abs().flatten(1).amax(dim=1)
        top = float(channel_max.max())
        median = float(channel_max.median())
        rows.append(
            {
                "layer": name,
                "kind": conv_kind(conv),
                "channels": int(weight.shape[0]),
                "spread": top / median if median > 0 else float("inf"),
                "median_levels": INT8_POSITIVE_LEVELS * median / top if top > 0 else 0.0,
                "smallest_levels": INT8_POSITIVE_LEVELS * float(channel_max.min()) / top if top > 0 else 0.0,
                "batchnorm_folded": bn_name is not None,
            }
        )
    return pd.DataFrame(rows)


def spread_by_kind(table: pd.DataFrame) -> pd.DataFrame:
    """Median over the layers of each kind: spread, median_levels and smallest_levels."""
    if table.empty:
        return pd.DataFrame(columns=["kind", "layers", "spread", "median_levels", "smallest_levels"])
    grouped = table.groupby("kind")
    out = grouped[["spread", "median_levels", "smallest_levels"]].median()
    out.insert(0, "layers", grouped.size())
    return out.reset_index()


def int8_weight_snr_db(weight: torch.Tensor, *, per_channel: bool) -> float:
    """Weight SNR (dB) of symmetric int8 round-to-nearest with one scale per tensor or per output channel."""
    rows = weight.detach().float().flatten(1)
    top = rows.abs().amax(dim=1, keepdim=True) if per_channel else rows.abs().max().expand(rows.shape[0], 1)
    scale = torch.where(top > 0, top / INT8_POSITIVE_LEVELS, torch.ones_like(top))
    error = rows - torch.round(rows / scale).clamp(-INT8_POSITIVE_LEVELS, INT8_POSITIVE_LEVELS) * scale
    noise = float((error**2).sum())
    return float("inf") if noise == 0 else 10.0 * math.log10(float((rows**2).sum()) / noise)


def with_int8_snr(*, module: nn.Module, table: pd.DataFrame) -> pd.DataFrame:
    """The table plus each layer's int8 weight SNR per tensor and per channel (BatchNorm folded as in the table)."""
    pairs = conv_bn_pairs(module)
    per_tensor, per_channel = [], []
    for row in table.itertuples():
        bn_name = pairs.get(row.layer) if row.batchnorm_folded else None
        weight = folded_weight(module, row.layer, bn_name) if bn_name else module.get_submodule(row.layer).weight
        per_tensor.append(int8_weight_snr_db(weight, per_channel=False))
        per_channel.append(int8_weight_snr_db(weight, per_channel=True))
    return table.assign(snr_per_tensor_db=per_tensor, snr_per_channel_db=per_channel)
