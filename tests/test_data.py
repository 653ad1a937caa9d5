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
    Dataset,
    DatasetError,
    Split,
    load_bundled_subset,
    load_fashion_mnist,
    load_image_folder,
    synthetic_inputs,
)
from core.safe_zip import ZipLimits


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

    one = _image_folder(tmp_path / "one", {"only": 4})
    with pytest.raises(DatasetError, match=r"only one class folder \('only'\): accuracy needs at least two classes"):
        load_image_folder(one, image_size=(8, 8), channels=3, mean=(0,) * 3, std=(1,) * 3)

    bad_zip = tmp_path / "bad.zip"
    bad_zip.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DatasetError, match="not a valid zip"):
        load_image_folder(bad_zip, image_size=(8, 8), channels=3, mean=(0,) * 3, std=(1,) * 3)
    shutil.rmtree(root)


# --------------------------------------------------------------------------- hardening: bad folders and zips


def _class_sorted(ds: Dataset) -> Dataset:
    """The bundled subset with its evaluation split sorted by class, as an ImageFolder read produces it."""
    order = torch.argsort(ds.test.labels, stable=True)
    return Dataset(
        name=ds.name, source=ds.source, train=ds.train, test=ds.test.subset(order), class_names=ds.class_names,
        mean=ds.mean, std=ds.std,
    )


def test_eval_split_is_a_seeded_class_balanced_sample_not_the_first_n():
    ds = _class_sorted(load_bundled_subset())
    assert ds.test.labels[:300].unique().tolist() == [0, 1]  # the first 300 would be two classes only
    split = ds.eval_split(limit=300)
    assert torch.bincount(split.labels, minlength=10).tolist() == [30] * 10
    assert torch.equal(split.images, ds.eval_split(limit=300).images)  # same seed, same images
    other = ds.eval_split(limit=300, seed=1)
    assert not torch.equal(split.images, other.images)
    small = ds.eval_split(limit=100)  # nested: a smaller sample is part of a larger one
    big = {img.numpy().tobytes() for img in split.images}
    assert all(img.numpy().tobytes() in big for img in small.images)
    assert ds.eval_split(limit=None) is ds.test and ds.eval_split(limit=10**6) is ds.test
    note = ds.eval_subset_note(limit=300)
    assert note == "Evaluated on 300 of the 2,500 evaluation images: a seeded, class-balanced sample (30 per class, seed 0)."
    assert ds.eval_subset_note(limit=None) is None
    with pytest.raises(DatasetError, match="positive"):
        ds.eval_split(limit=0)


def test_synthetic_evaluation_inputs_never_repeat_calibration_inputs():
    shape = (1, 8, 8)
    streams = {
        (purpose, seed): synthetic_inputs(input_shape=shape, count=64, seed=seed, purpose=purpose)
        for purpose in ("calibration", "evaluation", "timing")
        for seed in (0, 1, 123)
    }
    rows = {}
    for key, tensor in streams.items():
        for row in tensor:
            assert rows.setdefault(row.numpy().tobytes(), key[0]) == key[0], f"{key} repeats a {rows[row.numpy().tobytes()]} input"
    # Calibration keeps the historical stream (plain seed), so calibrated results do not move.
    legacy = torch.randn((64, *shape), generator=torch.Generator().manual_seed(0))
    assert torch.equal(streams[("calibration", 0)], legacy)
    assert torch.equal(synthetic_inputs(input_shape=shape, count=64, seed=0), legacy)
    with pytest.raises(ValueError, match="purpose must be one of"):
        synthetic_inputs(input_shape=shape, count=1, purpose="training")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed must be between"):
        synthetic_inputs(input_shape=shape, count=1, seed=-1)
    with pytest.raises(ValueError, match="seed must be between"):
        synthetic_inputs(input_shape=shape, count=1, seed=2**30)  # would reach the evaluation range


def test_image_folder_cap_keeps_every_class_and_says_why(tmp_path):
    root = _image_folder(tmp_path / "big", {"a": 12, "b": 12, "c": 12})
    ds = load_image_folder(root, image_size=(8, 8), channels=3, mean=(0.5,) * 3, std=(0.5,) * 3, max_images=15)
    assert len(ds.train) + len(ds.test) == 15
    counts = torch.bincount(torch.cat([ds.train.labels, ds.test.labels]), minlength=3).tolist()
    assert counts == [5, 5, 5]  # not "the first 15 files": that would be all of a, some of b, none of c
    assert any("36 images; a seeded, class-balanced sample of 15 was read (every class kept) to stay within max_images=15" in n
               for n in ds.notes)
    by_bytes = load_image_folder(root, image_size=(10, 10), channels=1, mean=(0.5,), std=(0.5,), max_decoded_bytes=1_200)
    assert len(by_bytes.train) + len(by_bytes.test) == 12
    assert any("1.20 kB of decoded images at 10×10×1" in n for n in by_bytes.notes)
    with pytest.raises(DatasetError, match=r"only 2 images fit the limits .* but there are 3 classes"):
        load_image_folder(root, image_size=(8, 8), channels=3, mean=(0.5,) * 3, std=(0.5,) * 3, max_images=2)


def _save_16bit_png(path: Path, value: int, size=(12, 9)) -> None:
    Image.fromarray(np.full(size, value, dtype=np.uint16)).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")  # really a 16-bit file


def test_image_folder_mixed_sizes_and_modes_are_converted_consistently(tmp_path):
    root = tmp_path / "mixed"
    for name in ("gray", "rgba", "deep", "palette"):
        (root / name).mkdir(parents=True)
    for i in range(3):
        Image.new("L", (30 + i, 17), 200).save(root / "gray" / f"{i}.png")
        Image.new("RGBA", (8, 40), (255, 0, 0, 10 * i)).save(root / "rgba" / f"{i}.png")
        _save_16bit_png(root / "deep" / f"{i}.png", 32896)  # 50 % of the 16-bit range → 128, not clipped to 255
        pal = Image.new("P", (11, 11))
        pal.putpalette([0, 0, 255] * 256)
        pal.info["transparency"] = b"\x00"  # byte-string transparency: Pillow warns unless converted via RGBA
        pal.save(root / "palette" / f"{i}.png")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Palette images with Transparency" or clipping warnings
        rgb = load_image_folder(root, image_size=(16, 16), channels=3, mean=(0.5,) * 3, std=(0.5,) * 3, seed=0)
        gray = load_image_folder(root, image_size=(16, 16), channels=1, mean=(0.5,), std=(0.5,), seed=0)
    assert rgb.input_shape == (3, 16, 16) and gray.input_shape == (1, 16, 16)
    assert len(rgb.train) + len(rgb.test) == 12 and not rgb.notes
    every = Split(torch.cat([rgb.train.images, rgb.test.images]), torch.cat([rgb.train.labels, rgb.test.labels]))
    pixel = {rgb.class_names[int(y)]: tuple(every.images[i, :, 8, 8].tolist()) for i, y in enumerate(every.labels)}
    assert pixel["gray"] == (200, 200, 200)
    assert pixel["rgba"] == (255, 0, 0)  # alpha dropped, as torchvision's ImageFolder loader does
    assert pixel["deep"] == (128, 128, 128)
    assert pixel["palette"] == (0, 0, 255)


def test_image_folder_corrupt_image_is_skipped_and_counted(tmp_path):
    root = _image_folder(tmp_path / "pets", {"cat": 5, "dog": 5})
    (root / "cat" / "broken.png").write_bytes(b"not an image")
    good = (root / "dog" / "0.png").read_bytes()
    (root / "dog" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "dog" / "README.txt").write_text("hello")
    ds = load_image_folder(root, image_size=(8, 8), channels=3, mean=(0,) * 3, std=(1,) * 3)
    assert len(ds.train) + len(ds.test) == 10
    assert "Skipped 2 unreadable image file(s) in pets: cat/broken.png, dog/truncated.png." in ds.notes
    assert any(n.startswith("Ignored 1 non-image file(s) in pets") for n in ds.notes)

    for file in (root / "cat").glob("*.png"):
        file.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"no readable images in class folder\(s\) cat of pets"):
        load_image_folder(root, image_size=(8, 8), channels=3, mean=(0,) * 3, std=(1,) * 3)


def _zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(folder.rglob("*")):
            zf.write(file, file.relative_to(folder.parent))
    return archive


def test_image_folder_zip_goes_to_the_callers_folder_or_is_cleaned_up(tmp_path, monkeypatch):
    archive = _zip_folder(_image_folder(tmp_path / "pets", {"cat": 3, "dog": 3}), tmp_path / "pets.zip")
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path / "home"))
    scratch = tmp_path / "home" / "tmp"  # the data folder's staging area (core.paths.staging_dir)
    first = load_image_folder(archive, image_size=(8, 8), channels=3, mean=(0,) * 3, std=(1,) * 3)
    assert scratch.is_dir() and list(scratch.iterdir()) == []  # extracted there, and gone again
    assert first.source == "user zip (pets.zip)"

    owned = tmp_path / "store" / "extract"
    second = load_image_folder(archive, image_size=(8, 8), channels=3, mean=(0,) * 3, std=(1,) * 3, extract_to=owned)
    assert sorted(p.name for p in (owned / "pets").iterdir()) == ["cat", "dog"]  # left for the owner to remove
    assert first.fingerprint == second.fingerprint  # a cache key that does not depend on the extraction folder
    other = load_image_folder(archive, image_size=(9, 9), channels=3, mean=(0,) * 3, std=(1,) * 3)
    assert other.fingerprint != first.fingerprint


def test_image_folder_zip_bomb_is_refused_before_extracting(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pets/cat/0.png", bytes(30_000_000))  # 30 MB of zeros in a ~30 kB file
    target = tmp_path / "extract"
    with pytest.raises(DatasetError, match=r"would expand to more than 10.00 MB .* refused before extracting anything"):
        load_image_folder(archive, image_size=(8, 8), channels=3, mean=(0,) * 3, std=(1,) * 3, extract_to=target,
                          zip_limits=ZipLimits(max_total_bytes=10_000_000))
    assert not target.exists()


def _photo_folder(root: Path, *, width: int = 300, height: int = 200) -> Path:
    """Two classes of one non-square RGB image each, with detail everywhere (a crop or resize shows)."""
    rng = np.random.default_rng(0)
    for index, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        pixels[:, : width // 3] = 40 * (index + 1)  # a flat band on the left that a centre crop cuts into
        Image.fromarray(pixels).save(root / name / "a.png")
        Image.fromarray(pixels[::-1].copy()).save(root / name / "b.png")
    return root


@pytest.mark.parametrize("resize,crop,interpolation", [(256, 224, "bilinear"), (320, 300, "bicubic")])
def test_image_folder_uses_the_models_resize_crop_and_interpolation(tmp_path, resize, crop, interpolation):
    from torchvision.transforms import CenterCrop, InterpolationMode, PILToTensor, Resize

    from core.models.preprocessing import Preprocessing

    folder = _photo_folder(tmp_path / "photos")
    preprocessing = Preprocessing(resize_size=resize, crop_size=crop, interpolation=interpolation)
    dataset = load_image_folder(folder, image_size=(crop, crop), channels=3, mean=(0.5,) * 3, std=(0.5,) * 3,
                                calibration_fraction=0.5, preprocessing=preprocessing)
    reference = {}
    for file in sorted(folder.rglob("*.png")):
        with Image.open(file) as img:
            resized = Resize(resize, interpolation=InterpolationMode(interpolation))(img.convert("RGB"))
            reference[file] = PILToTensor()(CenterCrop(crop)(resized))
    images = torch.cat([dataset.train.images, dataset.test.images])
    assert images.shape[1:] == (3, crop, crop)
    for expected in reference.values():  # every image is torchvision's Resize + CenterCrop, pixel for pixel
        assert any(torch.equal(expected, image) for image in images)
    assert f"resize {resize} → centre crop {crop}, {interpolation}" in " ".join(dataset.notes)
    plain = load_image_folder(folder, image_size=(crop, crop), channels=3, mean=(0.5,) * 3, std=(0.5,) * 3,
                              calibration_fraction=0.5)
    squashed = torch.cat([plain.train.images, plain.test.images])
    assert not any(torch.equal(a, b) for a in squashed for b in reference.values())  # without it: a plain resize


def test_grayscale_models_keep_one_channel_with_preprocessing(tmp_path):
    from core.models.preprocessing import Preprocessing

    folder = _photo_folder(tmp_path / "photos", width=40, height=60)
    dataset = load_image_folder(folder, image_size=(28, 28), channels=1, mean=(0.5,), std=(0.5,),
                                calibration_fraction=0.5,
                                preprocessing=Preprocessing(resize_size=32, crop_size=28, interpolation="bilinear"))
    assert dataset.test.images.shape[1:] == (1, 28, 28)
