"""Data discovery, the bundled-subset fallback, splits and user ImageFolder datasets (real files)."""

from __future__ import annotations

import gzip
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.data import (
    BUNDLED_SUBSET,
    DEBIAN_FASHION_MNIST,
    DatasetError,
    load_bundled_subset,
    load_fashion_mnist,
    load_image_folder,
)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def _fake_idx_folder(folder: Path, n_train: int = 50, n_test: int = 30) -> None:
    """A tiny, valid IDX dataset (real file format) built from the bundled images."""
    subset = np.load(BUNDLED_SUBSET)
    folder.mkdir(parents=True)
    _write_idx(folder / "train-images-idx3-ubyte.gz", subset["train_images"][:n_train])
    _write_idx(folder / "train-labels-idx1-ubyte.gz", subset["train_labels"][:n_train])
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", subset["test_images"][:n_test])
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", subset["test_labels"][:n_test])


def test_bundled_subset_is_real_balanced_and_disjoint():
    ds = load_bundled_subset()
    assert len(ds.test) >= 2000 and len(ds.train) >= 1000
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert torch.bincount(ds.test.labels, minlength=10).min() >= 200  # every class represented
    with np.load(BUNDLED_SUBSET) as npz:  # test images come from the official test split, train from train
        assert len(set(npz["test_source_indices"].tolist())) == len(ds.test)
        assert npz["test_source_indices"].max() < 10_000
    assert "bundled" in ds.source and ds.notes  # the UI can say accuracy is an estimate
    assert "MIT" in ds.license


def test_falls_back_to_bundled_subset_when_nothing_else(tmp_path):
    ds = load_fashion_mnist(data_dir=tmp_path / "empty", allow_download=False, search_system=False)
    assert "bundled subset" in ds.source


def test_data_folder_wins_over_system_and_bundle(tmp_path):
    _fake_idx_folder(tmp_path / "fashion-mnist")
    ds = load_fashion_mnist(data_dir=tmp_path, allow_download=False)
    assert ds.source.startswith("data/ folder")
    assert (len(ds.train), len(ds.test)) == (50, 30)


def test_truncated_idx_file_gives_clear_error(tmp_path):
    _fake_idx_folder(tmp_path / "fashion-mnist")
    target = tmp_path / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    data = gzip.decompress(target.read_bytes())
    target.write_bytes(gzip.compress(data[:-100]))
    with pytest.raises(DatasetError, match="truncated"):
        load_fashion_mnist(data_dir=tmp_path, allow_download=False)


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian dataset-fashion-mnist not installed")
def test_debian_package_gives_full_dataset(tmp_path):
    ds = load_fashion_mnist(data_dir=tmp_path, allow_download=False)
    assert "Debian" in ds.source
    assert (len(ds.train), len(ds.test)) == (60_000, 10_000)


def test_calibration_split_is_seeded_balanced_and_from_train_only():
    ds = load_bundled_subset()
    a = ds.calibration_split(size=100, seed=3)
    b = ds.calibration_split(size=100, seed=3)
    c = ds.calibration_split(size=100, seed=4)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert torch.bincount(a.labels, minlength=10).tolist() == [10] * 10
    test_bytes = {img.numpy().tobytes() for img in ds.test.images}
    assert not any(img.numpy().tobytes() in test_bytes for img in a.images)
    with pytest.raises(DatasetError, match="positive"):
        ds.calibration_split(size=0)


def test_normalised_batches_cover_eval_split_in_order():
    ds = load_bundled_subset()
    split = ds.eval_split(limit=300)
    batches = list(ds.batches(split, batch_size=128))
    assert [len(y) for _, y in batches] == [128, 128, 44]
    x, _ = batches[0]
    assert x.dtype == torch.float32 and abs(float(x.mean())) < 0.5


def _image_folder(root: Path, classes: dict[str, int], size=(20, 24)) -> Path:
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_image_folder_splits_are_disjoint_and_resized(tmp_path):
    root = _image_folder(tmp_path / "pets", {"cat": 10, "dog": 10})
    ds = load_image_folder(root, image_size=(32, 32), channels=3, mean=(0.5,) * 3, std=(0.5,) * 3, seed=1)
    assert ds.class_names == ("cat", "dog") and ds.input_shape == (3, 32, 32)
    assert len(ds.train) + len(ds.test) == 20 and len(ds.train) == 4  # 20 % per class for calibration


def test_image_folder_zip_and_explicit_train_val(tmp_path):
    base = tmp_path / "ds"
    _image_folder(base / "train", {"a": 3, "b": 3})
    _image_folder(base / "val", {"a": 2, "b": 2})
    archive = tmp_path / "ds.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in base.rglob("*.png"):
            zf.write(file, file.relative_to(tmp_path))
    ds = load_image_folder(archive, image_size=(16, 16), channels=1, mean=(0.5,), std=(0.5,))
    assert (len(ds.train), len(ds.test)) == (6, 4)


def test_image_folder_bad_layouts_give_clear_messages(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "x.png")
    with pytest.raises(DatasetError, match="no class folders"):
        load_image_folder(flat, image_size=(8, 8), channels=3, mean=(0,) * 3, std=(1,) * 3)

    root = _image_folder(tmp_path / "three", {"a": 2, "b": 2, "c": 2})
    with pytest.raises(DatasetError, match=r"3 classes .* model has 10 outputs"):
        load_image_folder(root, image_size=(8, 8), channels=3, mean=(0,) * 3, std=(1,) * 3, expected_classes=10)

    (root / "a" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"could not be read: a/broken.png"):
        load_image_folder(root, image_size=(8, 8), channels=3, mean=(0,) * 3, std=(1,) * 3)

    bad_zip = tmp_path / "bad.zip"
    bad_zip.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DatasetError, match="not a valid zip"):
        load_image_folder(bad_zip, image_size=(8, 8), channels=3, mean=(0,) * 3, std=(1,) * 3)
    shutil.rmtree(root)
