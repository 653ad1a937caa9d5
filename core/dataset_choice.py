"""Which evaluation data a session chose for its model: the kinds on offer and how each one is loaded.

The pages cache what `load_dataset_kind` returns; `dataset_for_model` adds the rules that decide whether the
model is measured on a dataset at all and whether the dataset fits it (core.compatibility).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from core.compatibility import check_dataset_fits
from core.data import Dataset, DatasetError, load_bundled_subset, load_fashion_mnist, load_image_folder
from core.models.preprocessing import Preprocessing
from core.models.sources import FASHION_MNIST, LoadedModel

DATASET_KINDS = {
    "auto": "The model's own dataset (best available copy)",
    "bundled": "Bundled Fashion-MNIST subset (always available)",
    "full": "Full Fashion-MNIST (10,000 test images)",
    "folder": "Your images: an ImageFolder .zip",
    "none": "None — synthetic inputs (size and latency only)",
}
FASHION_MNIST_NAME = "Fashion-MNIST"  # Dataset.name of every Fashion-MNIST copy


def uses_dataset(*, kind: str, model: LoadedModel) -> bool:
    """False when the model is measured on synthetic inputs: asked for, or 'auto' for a model without a dataset here."""
    return not (kind == "none" or (kind == "auto" and model.dataset != FASHION_MNIST))


def load_dataset_kind(
    *,
    kind: str,
    path: Path | None = None,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    expected_classes: int | None = None,
    preprocessing: Preprocessing | None = None,
) -> Dataset:
    """Load one of DATASET_KINDS (not 'none'); raises DatasetError with what to do when it cannot.

    `preprocessing` is the model's (LoadedModel.preprocessing): folder images are resized and centre-cropped by it."""
    if kind == "auto":
        return load_fashion_mnist()
    if kind == "bundled":
        return load_bundled_subset()
    if kind == "full":
        found = load_fashion_mnist(allow_download=False)
        if found.source.startswith("bundled"):
            raise DatasetError(
                "the full Fashion-MNIST test set was not found. Install Debian's dataset-fashion-mnist package or put "
                "the four IDX files in data/fashion-mnist/, then reload; meanwhile the bundled subset works."
            )
        return found
    if kind == "folder":
        if not path or image_size is None or channels is None or mean is None or std is None:
            raise DatasetError("choose an ImageFolder .zip and its input size and normalisation first.")
        return load_image_folder(Path(path), image_size=image_size, channels=channels, mean=mean, std=std,
                                 expected_classes=expected_classes, preprocessing=preprocessing)
    raise DatasetError(f"unknown dataset choice {kind!r}; use one of {', '.join(DATASET_KINDS)}.")


def dataset_for_model(*, kind: str, model: LoadedModel, load: Callable[[], Dataset]) -> Dataset | None:
    """The dataset to measure `model` on (None: synthetic inputs); `load` loads the chosen kind (cached by the caller).

    Raises DatasetError when the loaded dataset does not fit the model.
    """
    if not uses_dataset(kind=kind, model=model):
        return None
    dataset = load()
    check_dataset_fits(model=model, dataset=dataset)
    return dataset


def record_dataset_kinds(record: dict) -> tuple[str, ...]:
    """The dataset kinds that may hold the images an experiment was evaluated on (to show its flipped images)."""
    return ("bundled", "auto") if record.get("dataset") == FASHION_MNIST_NAME else ()


def is_record_dataset(dataset: Dataset | None, record: dict) -> bool:
    """Is `dataset` exactly the one the record was evaluated on? Its source must match, not only its name."""
    return dataset is not None and dataset.source == record.get("dataset_source")


def flipped_image_position(record: dict, *, dataset: Dataset, index: int) -> int:
    """Where a flipped image of `record` sits in `dataset.test`. Records store dataset positions
    (``flipped_index_base == 'dataset'``); older records stored the position among the evaluated images, which
    were a seeded sample of the dataset when fewer than all of them were evaluated."""
    if record.get("flipped_index_base") == "dataset":
        return int(index)
    evaluated = record.get("eval_images")
    return int(dataset.eval_indices(limit=int(evaluated) if evaluated else None)[int(index)])
