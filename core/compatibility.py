"""Does a dataset fit a model? One rule, used by the engine, the experiment runner and the pages."""

from __future__ import annotations

from core.data import Dataset, DatasetError
from core.models.sources import LoadedModel


def _shape(values: tuple[int, ...] | list[int]) -> str:
    return "×".join(map(str, values))


def dataset_mismatch(*, model: LoadedModel, dataset: Dataset) -> str | None:
    """Why `dataset` cannot evaluate `model` (image shape or class count), or None when it fits."""
    if tuple(dataset.input_shape) != tuple(model.input_shape):
        return (
            f"{dataset.name} images are {_shape(dataset.input_shape)} but {model.label} expects "
            f"{_shape(model.input_shape)}; choose a dataset with that image size and channel count."
        )
    if dataset.num_classes != model.num_classes:
        return (
            f"{dataset.name} has {dataset.num_classes} classes but {model.label} has {model.num_classes} outputs; "
            "choose a dataset with one class folder per model output."
        )
    return None


def check_dataset_fits(*, model: LoadedModel, dataset: Dataset) -> None:
    """Raise DatasetError with the reason when `dataset` does not fit `model`."""
    reason = dataset_mismatch(model=model, dataset=dataset)
    if reason is not None:
        raise DatasetError(reason)
