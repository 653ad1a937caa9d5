"""Weight values for the histograms, saved next to the record as ``weights.npz`` (read with allow_pickle=False).

Keys are ``<layer>/<kind>``: ``original`` and ``compressed`` (the same seeded sample of positions in both, at most
`max_values` of them, so they pair up), plus whatever grid the method has — ``lut`` centroids, quantization
``scale`` / ``zero_point``, pruning ``threshold``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

MAX_VALUES = 50_000
PAIRED_KINDS = ("original", "compressed")


def _to_numpy(value: object) -> np.ndarray | None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.is_quantized:
            tensor = tensor.dequantize()
        if tensor.is_floating_point():
            tensor = tensor.float()
        return tensor.numpy()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, int | float | bool | np.number):
        return np.asarray(value)
    if isinstance(value, list | tuple) and all(isinstance(v, int | float) for v in value):
        return np.asarray(value)
    return None  # strings, dicts, None: not histogram data


def weight_arrays(weights: dict, *, max_values: int = MAX_VALUES, seed: int = 0) -> dict[str, np.ndarray]:
    """Flatten CompressionResult.weights into npz-ready arrays, sampling big layers at the same positions."""
    arrays: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(seed)
    for layer, kinds in weights.items():
        if not isinstance(kinds, dict):
            continue
        converted = {kind: _to_numpy(value) for kind, value in kinds.items()}
        converted = {k: v for k, v in converted.items() if v is not None and v.dtype != object}
        size = max((converted[k].size for k in PAIRED_KINDS if k in converted), default=0)
        picked = np.sort(rng.choice(size, size=max_values, replace=False)) if size > max_values else None
        for kind, array in converted.items():
            flat = array.reshape(-1)
            if kind in PAIRED_KINDS and picked is not None and flat.size == size:
                flat = flat[picked]
            elif flat.size > max_values:  # e.g. per-block scales of a huge layer
                flat = flat[np.sort(rng.choice(flat.size, size=max_values, replace=False))]
            if flat.dtype == np.float64:
                flat = flat.astype(np.float32)
            arrays[f"{layer}/{kind}"] = flat
    return arrays


def write_weights_npz(*, weights: dict, path: Path, max_values: int = MAX_VALUES, seed: int = 0) -> Path | None:
    """Write the histogram arrays atomically (temp file + rename); None when there is nothing to write."""
    arrays = weight_arrays(weights, max_values=max_values, seed=seed)
    if not arrays:
        return None
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_weights_npz(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """layer → kind → values, without unpickling anything."""
    out: dict[str, dict[str, np.ndarray]] = {}
    with np.load(Path(path), allow_pickle=False) as npz:
        for key in npz.files:
            layer, _, kind = key.rpartition("/")
            out.setdefault(layer, {})[kind] = npz[key]
    return out
