"""Fixtures for the compression-engine tests: real data (the bundled Fashion-MNIST subset) and tiny real models."""

from __future__ import annotations

import pytest
import torch

from core.data import Dataset, load_bundled_subset
from core.models.sources import LoadedModel
from tests.conftest import fashion_cnn_model, tiny_model

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def fashion() -> Dataset:
    return load_bundled_subset()


@pytest.fixture
def tiny() -> LoadedModel:
    return tiny_model()


@pytest.fixture(scope="session")
def fashion_cnn() -> LoadedModel:
    """A random-init fashion_cnn (the architecture of the sample model); never modified by the engine."""
    return fashion_cnn_model()
