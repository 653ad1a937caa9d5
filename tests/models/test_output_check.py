"""A model must return one row of class scores per image; anything else is refused in one line."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.models.errors import ModelLoadError
from core.models.output_check import check_class_scores


class _Features(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(x)
        return y, y.mean()


def test_scores_pass_and_other_outputs_are_refused():
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 6))
    check_class_scores(module=classifier, input_shape=(3, 8, 8), num_classes=6, label="tiny")
    with pytest.raises(ModelLoadError, match=r"^tiny does not return class scores: for 2 images it returned a "
                       r"torch\.float32 tensor shaped 2×6, not 2×10\."):
        check_class_scores(module=classifier, input_shape=(3, 8, 8), num_classes=10, label="tiny")
    with pytest.raises(ModelLoadError, match=r"^features does not return class scores: .* a tuple of 2 values, not 2×4"):
        check_class_scores(module=_Features(), input_shape=(3, 8, 8), num_classes=4, label="features")
    with pytest.raises(ModelLoadError, match=r"^tiny failed on a 2×3×9×9 input"):
        check_class_scores(module=classifier, input_shape=(3, 9, 9), num_classes=6, label="tiny")
