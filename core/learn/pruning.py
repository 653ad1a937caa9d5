"""Lesson 4: magnitude pruning — which weights become zero under unstructured, block and n:m patterns.

The masks come from coremltools' own mask functions, the ones its MagnitudePruner calls in ``compute_mask``
(``magnitude_ranked_mask`` for unstructured and block sparsity, ``n_m_mask`` for n:m along input channels,
as the Compress page configures it); tests/learn checks them against a real MagnitudePruner run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.learn.tensors import stored_bits, weight_snr_db
from core.library_internals import magnitude_ranked_mask, n_m_mask

STRUCTURES = ("unstructured", "block", "n_m")


@dataclass(frozen=True)
class PruneSetting:
    structure: str = "unstructured"
    sparsity: float = 0.5  # unstructured and block
    block_size: int = 4  # block: consecutive output channels pruned together
    n: int = 2  # n:m: n of every m consecutive input channels are zeroed
    m: int = 4

    def __post_init__(self) -> None:
        if self.structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {', '.join(STRUCTURES)}, got {self.structure!r}.")
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}.")
        if self.block_size < 2 and self.structure == "block":
            raise ValueError(f"block_size must be at least 2 for block sparsity, got {self.block_size}.")
        if self.structure == "n_m" and not 1 <= self.n < self.m:
            raise ValueError(f"n must be at least 1 and smaller than m, got {self.n}:{self.m}.")

    @property
    def target_sparsity(self) -> float:
        return self.n / self.m if self.structure == "n_m" else self.sparsity


def check_fits(shape: tuple[int, ...], setting: PruneSetting) -> str | None:
    """Why the Compress page's pruner would skip a tensor of this shape (None: it prunes it)."""
    if setting.structure == "block" and setting.block_size > shape[0] // 2:
        return f"block size {setting.block_size} exceeds half the output channels ({shape[0]})."
    if setting.structure == "n_m" and shape[1] % setting.m:
        return f"{shape[1]} input channels are not divisible by m = {setting.m}."
    return None


def prune_mask(weight: np.ndarray, setting: PruneSetting) -> np.ndarray:
    """The keep-mask (True: kept) coremltools' MagnitudePruner computes for this weight and setting."""
    tensor = torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32))
    if setting.structure == "n_m":
        mask = n_m_mask(tensor, (setting.n, setting.m), dim=1)
    else:
        block = setting.block_size if setting.structure == "block" else 1
        mask = magnitude_ranked_mask(tensor, setting.sparsity, block, "per_scalar")
    return mask.bool().numpy()


@dataclass(frozen=True)
class PruneResult:
    setting: PruneSetting
    mask: np.ndarray  # bool, True where the weight is kept
    pruned: np.ndarray  # weight × mask
    snr_db: float

    @property
    def sparsity(self) -> float:
        """Measured fraction of zeros (weights that were already zero count too)."""
        return float((self.pruned == 0).mean())

    @property
    def threshold(self) -> float:
        """The smallest kept magnitude: unstructured pruning zeroes everything below it."""
        kept = np.abs(self.pruned[self.mask])
        return float(kept.min()) if kept.size else 0.0

    def storage_bits(self) -> dict[str, float]:
        """A 1-bit mask over every position plus the surviving values in fp16, as the product's size model counts them."""
        return stored_bits(parts=("masks", "sparse_values"), shape=self.pruned.shape, method="prune",
                           sparsity=self.sparsity)

    def bits_per_weight(self) -> float:
        return sum(self.storage_bits().values()) / self.pruned.size


def prune(weight: np.ndarray, setting: PruneSetting) -> PruneResult:
    weight = np.asarray(weight, dtype=np.float32)
    reason = check_fits(weight.shape, setting)
    if reason:
        raise ValueError(reason + " Pick another block size or n:m.")
    mask = prune_mask(weight, setting)
    pruned = np.where(mask, weight, np.float32(0.0))
    return PruneResult(setting=setting, mask=mask, pruned=pruned, snr_db=weight_snr_db(weight, pruned))


def sparsity_curve(weight: np.ndarray, *, structure: str, block_size: int = 4,
                   sparsities: tuple[float, ...] = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2))) -> tuple[np.ndarray, np.ndarray]:
    """Weight SNR (dB) of the library's mask at each sparsity, for unstructured or block pruning."""
    if structure not in ("unstructured", "block"):
        raise ValueError("the sparsity curve is drawn for unstructured and block pruning (n:m has one sparsity).")
    snrs = [prune(weight, PruneSetting(structure=structure, sparsity=float(s), block_size=block_size)).snr_db
            for s in sparsities]
    return np.asarray(sparsities, dtype=float), np.asarray(snrs, dtype=float)
