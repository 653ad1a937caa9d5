"""The evaluation-data choices the Model page offers: when a dataset is used, how each kind loads, and fit checks."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from core.data import DatasetError
from core.dataset_choice import (
    DATASET_KINDS,
    dataset_for_model,
    flipped_image_position,
    is_record_dataset,
    load_dataset_kind,
    record_dataset_kinds,
    uses_dataset,
)
from core.models.sources import load_model


@pytest.fixture(scope="module")
def cnn():
    return load_model("sample:fashion_cnn")


@pytest.fixture(scope="module")
def bundled():
    return load_dataset_kind(kind="bundled")


def test_when_a_dataset_is_used(cnn) -> None:
    assert uses_dataset(kind="auto", model=cnn) and uses_dataset(kind="bundled", model=cnn)
    assert not uses_dataset(kind="none", model=cnn)
    no_dataset = dataclasses.replace(cnn, dataset=None)  # e.g. a torchvision architecture with random weights
    assert not uses_dataset(kind="auto", model=no_dataset) and uses_dataset(kind="folder", model=no_dataset)


def test_bundled_subset_fits_the_sample(cnn, bundled) -> None:
    assert dataset_for_model(kind="bundled", model=cnn, load=lambda: bundled) is bundled
    assert dataset_for_model(kind="none", model=cnn, load=lambda: pytest.fail("must not load")) is None


def test_a_dataset_that_does_not_fit_is_refused(cnn, bundled) -> None:
    wide = dataclasses.replace(cnn, input_shape=(3, 32, 32))
    with pytest.raises(DatasetError, match="expects 3×32×32"):
        dataset_for_model(kind="bundled", model=wide, load=lambda: bundled)


def test_bad_choices_say_what_to_do() -> None:
    with pytest.raises(DatasetError, match=r"choose an ImageFolder \.zip"):
        load_dataset_kind(kind="folder")
    with pytest.raises(DatasetError, match="unknown dataset choice 'imagenet'"):
        load_dataset_kind(kind="imagenet")
    assert set(DATASET_KINDS) == {"auto", "bundled", "full", "folder", "none"}


def test_finding_a_record_dataset_again(bundled) -> None:
    record = {"dataset": bundled.name, "dataset_source": bundled.source}
    assert record_dataset_kinds(record) == ("bundled", "auto")
    assert is_record_dataset(bundled, record)
    assert not is_record_dataset(bundled, {**record, "dataset_source": "user zip (x.zip)"})
    assert record_dataset_kinds({"dataset": "ImageFolder fashion"}) == ()


def test_flipped_image_position_in_new_and_older_records(bundled) -> None:
    sample = bundled.eval_indices(limit=300)
    assert torch.equal(bundled.test.images[sample], bundled.eval_split(limit=300).images)
    new = {"flipped_index_base": "dataset", "eval_images": 300}
    assert flipped_image_position(new, dataset=bundled, index=17) == 17
    older = {"eval_images": 300}  # its index counted the evaluated images only
    assert flipped_image_position(older, dataset=bundled, index=17) == int(sample[17])
    assert flipped_image_position({"eval_images": len(bundled.test)}, dataset=bundled, index=17) == 17
