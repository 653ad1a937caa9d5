"""The tensors a lesson works on: a real layer's weights, or a small hand-made one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from core.compress.layers import weight_layers, weight_of
from core.compress.result import LayerReport
from core.measure.quality import snr_db
from core.measure.size import layer_storage_bits

TOY_NAME = "hand-made 8×16 tensor"


@dataclass(frozen=True)
class LayerChoice:
    """One weight-bearing layer a lesson can use."""

    name: str
    type: str
    shape: tuple[int, ...]
    params: int

    @property
    def label(self) -> str:
        return f"{self.name} · {self.type} {'×'.join(map(str, self.shape))} · {self.params:,} weights"


def layer_choices(module: nn.Module) -> list[LayerChoice]:
    """Every weight-bearing layer of the model, in model order."""
    return [
        LayerChoice(name, type(layer).__name__, tuple(layer.weight.shape), int(layer.weight.numel()))
        for name, layer in weight_layers(module).items()
    ]


def largest_layer(choices: list[LayerChoice]) -> str:
    return max(choices, key=lambda c: c.params).name


def layer_weight(module: nn.Module, *, name: str) -> np.ndarray:
    """The layer's float weight as a float32 array (a copy: lessons never touch the model)."""
    layers = weight_layers(module)
    if name not in layers:
        raise ValueError(f"the model has no weight layer called {name!r}; pick one from the list.")
    return np.ascontiguousarray(weight_of(layers[name]).numpy().astype(np.float32))


def toy_tensor() -> np.ndarray:
    """A tiny 8×16 weight matrix (output × input) with one outlier channel: small enough to see every value.

    Seeded and fixed, so the lesson text can refer to it ("channel 5 is the outlier").
    """
    rng = np.random.default_rng(12)
    weights = rng.normal(0.0, 0.05, size=(8, 16)).astype(np.float32)
    weights[5] *= 6.0  # the outlier channel
    weights[2, 3] = 0.0
    return weights


def matrix_view(weight: np.ndarray) -> tuple[np.ndarray, str]:
    """A 2-D (output channels × input channels) view for heatmaps, and the title of its column axis.

    Conv kernels show their centre tap, so rows are output channels and columns input channels, the two axes
    along which block and n:m patterns run.
    """
    if weight.ndim == 2:
        return weight, "input"
    if weight.ndim == 4:
        kh, kw = weight.shape[2] // 2, weight.shape[3] // 2
        return weight[:, :, kh, kw], f"input channel (kernel tap {kh},{kw})"
    flat = weight.reshape(weight.shape[0], -1)
    return flat, "flattened input"


def crop(matrix: np.ndarray, *, rows: int = 32, cols: int = 64) -> np.ndarray:
    """The top-left corner of a matrix (heatmaps of a whole 512×512 layer are unreadable and slow)."""
    return matrix[:rows, :cols]


def crop_note(matrix: np.ndarray, shown: np.ndarray) -> str:
    """' (top-left 32 × 64 of 256 × 256)' when a heatmap shows only a corner of the matrix, else ''."""
    if shown.shape == matrix.shape:
        return ""
    return f" (top-left {shown.shape[0]} × {shown.shape[1]} of {matrix.shape[0]} × {matrix.shape[1]})"


def weight_snr_db(original: np.ndarray, approximation: np.ndarray) -> float:
    """The product's one SNR (core.measure.quality.snr_db) of an approximation of a weight array, in dB."""
    return snr_db(
        reference=torch.from_numpy(np.ascontiguousarray(original)),
        candidate=torch.from_numpy(np.ascontiguousarray(approximation)),
    )


def stored_bits(*, parts: tuple[str, ...], shape: tuple[int, ...], **report: object) -> dict[str, float]:
    """Bits a lesson's layer stores, by part (`parts`: the breakdown keys a lesson shows, zeros included), from the
    product's size model (core.measure.size) — the same numbers a real run's size and bits per weight come from.

    `report`: the LayerReport fields of the compressed layer (method, bits, n_luts, n_scales, sparsity, …)."""
    layer = LayerReport(name="", type="", shape=tuple(shape), params=int(np.prod(shape)), compressed=True,
                        **report)  # type: ignore[arg-type]
    bits = layer_storage_bits(layer)
    return {part: bits[part] for part in parts}
