"""Plain JSON values: the one clean-up applied to a record before it is returned, written or stored."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np


def to_jsonable(value: object) -> object:
    """Plain JSON types only: numpy/tensor scalars → numbers, arrays → lists, Paths → str, tuples/sets → lists,
    inf/nan → None (JSON has no infinity; the UI shows "n/a"). Anything else becomes its text."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    torch = sys.modules.get("torch")  # only a record built with torch can hold a tensor: no import needed otherwise
    if torch is not None and isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
        return to_jsonable(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bool | int | str) or value is None:
        return value
    return str(value)
