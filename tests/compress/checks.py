"""Measurements tests assert on (computed from the weights themselves, independent of the engine's report)."""

from __future__ import annotations

import torch


def max_distinct_per_group(weight: torch.Tensor, group_size: int | None = None) -> int:
    """Most distinct values in any group of `group_size` output channels (None: the whole tensor)."""
    rows = weight.shape[0]
    size = rows if group_size is None else group_size
    return max(torch.unique(weight[i : i + size]).numel() for i in range(0, rows, size))


def max_distinct_vectors(weight: torch.Tensor, cluster_dim: int) -> int:
    """Distinct cluster_dim-long vectors along the output-channel axis (vector palettization)."""
    flat = weight.flatten(1).transpose(0, 1).reshape(-1, cluster_dim)
    return torch.unique(flat, dim=0).shape[0]


def max_distinct_per_block(weight: torch.Tensor, block_size: int) -> int:
    """Most distinct values in any [1 × block_size × kernel] block along the input channels."""
    worst = 0
    for row in weight:
        for start in range(0, row.shape[0], block_size):
            worst = max(worst, torch.unique(row[start : start + block_size]).numel())
    return worst


def sparsity(weight: torch.Tensor) -> float:
    return float((weight == 0).float().mean())
