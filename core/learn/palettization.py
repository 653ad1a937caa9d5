"""Lesson 3: palettization — a look-up table (LUT) of 2ⁿ values and an n-bit index per weight (or weight vector).

The LUTs and palettized weights come from coremltools' PostTrainingPalettizer (its k-means), the API the
Compress page's data-free palettization runs, applied to a one-layer copy of the tensor. The index of every
weight is read back as the LUT entry its palettized value equals, and checked to reproduce the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from coremltools.optimize.torch.palettization import (
    ModulePostTrainingPalettizerConfig,
    PostTrainingPalettizer,
    PostTrainingPalettizerConfig,
)
from torch import nn

from core.learn.tensors import stored_bits, weight_snr_db
from core.library_internals import metadata_buffers


@dataclass(frozen=True)
class PaletteSetting:
    """One palettization setting of the lesson (the Compress page's palettize knobs, k-means, data-free)."""

    n_bits: int = 4
    granularity: str = "per_tensor"  # or "per_grouped_channel"
    group_size: int = 16
    cluster_dim: int = 1
    per_channel_scale: bool = False

    def __post_init__(self) -> None:
        if self.n_bits not in (1, 2, 3, 4, 6, 8):
            raise ValueError(f"n_bits must be one of 1, 2, 3, 4, 6, 8, got {self.n_bits}.")
        if self.granularity not in ("per_tensor", "per_grouped_channel"):
            raise ValueError(f"granularity must be per_tensor or per_grouped_channel, got {self.granularity!r}.")
        if self.group_size < 1:
            raise ValueError(f"group_size must be at least 1, got {self.group_size}.")
        if self.cluster_dim not in (1, 2, 4):
            raise ValueError(f"cluster_dim must be 1, 2 or 4, got {self.cluster_dim}.")
        if self.cluster_dim > 1 and self.n_bits > 4:
            raise ValueError("vector palettization (cluster_dim > 1) is offered here up to 4 bits; pick fewer bits.")

    @property
    def entries(self) -> int:
        return 2**self.n_bits


def check_fits(shape: tuple[int, ...], setting: PaletteSetting) -> str | None:
    """Why coremltools cannot palettize a tensor of this shape with this setting (None: it can)."""
    channels = shape[0]
    if setting.granularity == "per_grouped_channel" and channels % setting.group_size:
        return f"{channels} output channels are not divisible by group size {setting.group_size}."
    if setting.cluster_dim > 1 and channels % setting.cluster_dim:
        return f"{channels} output channels are not divisible by cluster_dim {setting.cluster_dim}."
    return None


@dataclass(frozen=True)
class PaletteResult:
    setting: PaletteSetting
    lut: np.ndarray  # (n_luts, entries, cluster_dim); in channel-normalised units when per_channel_scale is on
    channel_scale: np.ndarray | None  # (out_channels,) or None
    indices: np.ndarray  # (out_channels / cluster_dim, *rest): the LUT entry of every weight (vector)
    dequantized: np.ndarray  # the palettized weights (what the model computes with)
    snr_db: float

    @property
    def n_luts(self) -> int:
        return int(self.lut.shape[0])

    @property
    def channels_per_lut(self) -> int:
        return (self.indices.shape[0] * self.setting.cluster_dim) // self.n_luts

    def lut_of_channel(self, channel: int) -> int:
        return channel // self.channels_per_lut

    def storage_bits(self) -> dict[str, float]:
        """Bits of the stored layer by kind: indices, LUTs (fp16 entries) and per-channel scales, as the product's
        size model counts them."""
        return stored_bits(parts=("indices", "luts", "scales"), shape=self.dequantized.shape, method="palettize",
                           bits=self.setting.n_bits, n_luts=self.n_luts, lut_entries=int(self.lut.shape[1]),
                           n_scales=0 if self.channel_scale is None else int(self.channel_scale.size),
                           extra={"cluster_dim": self.setting.cluster_dim})

    def bits_per_weight(self) -> float:
        return sum(self.storage_bits().values()) / self.dequantized.size

    def used_entries(self) -> int:
        """How many LUT entries at least one weight uses, summed over LUTs."""
        groups = self.indices.reshape(self.n_luts, -1)
        return int(sum(len(np.unique(g)) for g in groups))


def one_layer_module(weight: np.ndarray) -> nn.Module:
    """A bias-free Linear or Conv2d holding `weight`, the kind of module coremltools palettizes."""
    tensor = torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32))
    if weight.ndim == 2:
        layer: nn.Module = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    elif weight.ndim == 4:
        layer = nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]), bias=False)
    else:
        raise ValueError(f"only 2-D (Linear) and 4-D (Conv2d) weights can be palettized here, got shape {weight.shape}.")
    with torch.no_grad():
        layer.weight.copy_(tensor)
    return nn.Sequential(layer)


def palettize(weight: np.ndarray, setting: PaletteSetting) -> PaletteResult:
    """k-means palettization of `weight` by coremltools' PostTrainingPalettizer."""
    weight = np.asarray(weight, dtype=np.float32)
    reason = check_fits(weight.shape, setting)
    if reason:
        raise ValueError(reason + " Pick another group size / vector size.")
    module = one_layer_module(weight)
    config = ModulePostTrainingPalettizerConfig(
        n_bits=setting.n_bits,
        granularity=setting.granularity,
        group_size=setting.group_size if setting.granularity == "per_grouped_channel" else None,
        cluster_dim=setting.cluster_dim if setting.cluster_dim > 1 else None,
        enable_per_channel_scale=setting.per_channel_scale,
    )
    compressed = PostTrainingPalettizer(module, PostTrainingPalettizerConfig(global_config=config)).compress(inplace=True)
    layer = compressed[0]
    buffers = metadata_buffers(layer)
    if "lut" not in buffers:
        raise ValueError("coremltools did not palettize this tensor (it may be too small); pick a larger layer.")
    dequantized = layer.weight.detach().float().numpy().copy()
    lut = buffers["lut"].detach().float().numpy()
    lut = lut.reshape(-1, lut.shape[-2], lut.shape[-1])
    scale = buffers.get("palettization_scale")
    channel_scale = None if scale is None else scale.detach().float().numpy().reshape(-1)
    indices = _indices(dequantized, lut, channel_scale, setting.cluster_dim)
    return PaletteResult(
        setting=setting, lut=lut, channel_scale=channel_scale, indices=indices, dequantized=dequantized,
        snr_db=weight_snr_db(weight, dequantized),
    )


def _indices(dequantized: np.ndarray, lut: np.ndarray, channel_scale: np.ndarray | None, cluster_dim: int) -> np.ndarray:
    """The LUT entry each palettized weight (or vector of `cluster_dim` weights along the output axis) came from."""
    values = dequantized.astype(np.float64)
    if channel_scale is not None:
        values = values / channel_scale.astype(np.float64).reshape((-1,) + (1,) * (values.ndim - 1))
    out = values.shape[0]
    n_luts = lut.shape[0]
    per_lut = out // n_luts
    # vectors: cluster_dim consecutive output channels at the same position → (out / cd, *rest, cd)
    vectors = values.reshape(out // cluster_dim, cluster_dim, *values.shape[1:])
    vectors = np.moveaxis(vectors, 1, -1)
    indices = np.empty(vectors.shape[:-1], dtype=np.int32)
    rows_per_lut = per_lut // cluster_dim if per_lut >= cluster_dim else 1
    for g in range(n_luts):
        rows = slice(g * rows_per_lut, (g + 1) * rows_per_lut)
        block = vectors[rows]
        centroids = lut[g].astype(np.float64)  # (entries, cd)
        if cluster_dim == 1:
            order = np.argsort(centroids[:, 0])
            ordered = centroids[order, 0]
            mids = (ordered[1:] + ordered[:-1]) / 2
            indices[rows] = order[np.searchsorted(mids, block[..., 0])]
        else:
            flat = block.reshape(-1, cluster_dim)
            distances = ((flat[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=-1)
            indices[rows] = distances.argmin(axis=1).reshape(block.shape[:-1])
    return indices


def reconstruct(result: PaletteResult) -> np.ndarray:
    """The weights rebuilt from LUT[index] (× channel scale): equals `dequantized` when the indices are right."""
    rows_per_lut = max(result.indices.shape[0] // result.n_luts, 1)
    lut_of_row = np.arange(result.indices.shape[0]) // rows_per_lut
    expand = lut_of_row.reshape((-1,) + (1,) * (result.indices.ndim - 1))
    vectors = result.lut[np.broadcast_to(expand, result.indices.shape), result.indices]  # (rows, *rest, cd)
    values = np.moveaxis(vectors, -1, 1).reshape(result.dequantized.shape)
    if result.channel_scale is not None:
        values = values * result.channel_scale.reshape((-1,) + (1,) * (values.ndim - 1))
    return values.astype(np.float32)


def vector_pairs(weight: np.ndarray, result: PaletteResult, *, limit: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded sample of (weight pair, its index) for the cluster_dim-2 scatter, from the first LUT's channels."""
    if result.setting.cluster_dim != 2:
        raise ValueError("weight pairs exist only for cluster_dim 2.")
    values = weight.astype(np.float32)
    if result.channel_scale is not None:
        values = values / result.channel_scale.reshape((-1,) + (1,) * (values.ndim - 1))
    rows = max(result.indices.shape[0] // result.n_luts, 1)
    pairs = np.moveaxis(values.reshape(values.shape[0] // 2, 2, *values.shape[1:]), 1, -1)[:rows].reshape(-1, 2)
    index = result.indices[:rows].reshape(-1)
    if len(pairs) > limit:
        pick = np.random.default_rng(seed).choice(len(pairs), size=limit, replace=False)
        pairs, index = pairs[pick], index[pick]
    return pairs, index
