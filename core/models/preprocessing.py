"""How images are prepared for a model: resize the shorter side, centre-crop, with the model's interpolation.

torchvision's weights metadata and timm's data config both describe evaluation preprocessing this way
(e.g. ViT-B/16: resize 256 → crop 224, bilinear; EfficientNet-B3: 320 → 300, bicubic).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
DEFAULT_CROP_FRACTION = 0.875  # the ImageNet convention (224 of 256) where a model states none


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter image side to `resize_size`, then centre-crop `crop_size` × `crop_size`."""

    resize_size: int
    crop_size: int
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if not isinstance(self.crop_size, int) or self.crop_size < 1:
            raise ValueError(f"Preprocessing.crop_size must be a positive integer; got {self.crop_size!r}.")
        if not isinstance(self.resize_size, int) or self.resize_size < self.crop_size:
            raise ValueError(
                f"Preprocessing.resize_size must be an integer ≥ crop_size ({self.crop_size}); got {self.resize_size!r}."
            )
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"Preprocessing.interpolation must be one of {', '.join(INTERPOLATIONS)}; got {self.interpolation!r}."
            )

    def describe(self) -> str:
        return f"resize {self.resize_size} → centre crop {self.crop_size}, {self.interpolation}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Preprocessing: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
        return cls(**data)


def default_preprocessing(*, crop_size: int, interpolation: str = "bilinear",
                          crop_fraction: float = DEFAULT_CROP_FRACTION) -> Preprocessing:
    """What a model without stated preprocessing gets: the ImageNet 0.875 crop convention."""
    return Preprocessing(resize_size=max(crop_size, int(crop_size / crop_fraction)), crop_size=crop_size,
                         interpolation=interpolation)
