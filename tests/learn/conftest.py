"""Lesson fixtures: the real sample model's weights (fashion_cnn, trained) and the hand-made tensor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.models.sources import LoadedModel, load_model
from core.progress import quiet_libraries

torch.set_num_threads(2)
quiet_libraries()

CONV = "features.10"  # 64×64×3×3 = 36,864 weights
LINEAR = "classifier.1"  # 256×3136 = 802,816 weights


@pytest.fixture(scope="session")
def sample() -> LoadedModel:
    return load_model("sample:fashion_cnn")


@pytest.fixture(scope="session")
def conv_weight(sample: LoadedModel) -> np.ndarray:
    from core.learn.tensors import layer_weight

    return layer_weight(sample.module, name=CONV)


@pytest.fixture(scope="session")
def linear_weight(sample: LoadedModel) -> np.ndarray:
    from core.learn.tensors import layer_weight

    return layer_weight(sample.module, name=LINEAR)
