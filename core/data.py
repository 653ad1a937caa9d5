"""Evaluation, calibration and fine-tuning data: Fashion-MNIST discovery and user ImageFolder datasets.

Everything is held in memory as uint8 tensors (Fashion-MNIST is 55 MB) and normalised on the way out,
so splits are cheap, deterministic under a seed, and never touch the disk twice.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import socket
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from core.fashion_mnist import FASHION_MNIST_CLASSES, FASHION_MNIST_MEAN, FASHION_MNIST_STD
from core.formatting import fmt_bytes
from core.paths import staging_dir
from core.safe_zip import DEFAULT_LIMITS as DEFAULT_ZIP_LIMITS
from core.safe_zip import UnsafeZipError, ZipLimits, extract_zip

if TYPE_CHECKING:
    from core.models.preprocessing import Preprocessing

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_SUBSET = PROJECT_ROOT / "sample_models" / "fashion_mnist_subset.npz"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_LICENSE = (
    "Fashion-MNIST © Zalando SE, released under the MIT licence "
    "(https://github.com/zalandoresearch/fashion-mnist)."
)
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


VALIDATION_SEED = 7919  # the validation slice's sample of the training pool (calibration uses seed 0 by default)


class DatasetError(ValueError):
    """A dataset could not be found or read; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class Split:
    """Images as uint8 N×C×H×W and integer labels."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DatasetError("images must be a uint8 tensor shaped N×C×H×W")
        if len(self.images) != len(self.labels):
            raise DatasetError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> Split:
        return Split(self.images[indices], self.labels[indices])


@dataclass(frozen=True)
class Dataset:
    """A labelled image dataset with a training pool (calibration / fine-tuning) and a disjoint evaluation split."""

    name: str
    source: str  # human-readable: where the images came from
    train: Split
    test: Split
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    license: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.test.images.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N×C×H×W → normalised float32."""
        x = images.float().div_(255.0)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x - mean) / std

    def eval_split(self, *, limit: int | None = None, seed: int = 0) -> Split:
        """The evaluation images: all of them, or a seeded, class-balanced sample of `limit` (in dataset order).

        Never "the first N": evaluation splits are often sorted by class, and the first N would score the
        model on its first few classes only. The same (limit, seed) always gives the same images, and a
        smaller limit gives a subset of a larger one.
        """
        if limit is None or limit >= len(self.test):
            return self.test
        return self.test.subset(self.eval_indices(limit=limit, seed=seed))

    def eval_indices(self, *, limit: int | None = None, seed: int = 0) -> torch.Tensor:
        """Where each image of `eval_split(limit=…, seed=…)` sits in `test`: position i of the split is image
        `eval_indices(…)[i]` of the dataset. Records store these dataset positions, never split positions."""
        if limit is None or limit >= len(self.test):
            return torch.arange(len(self.test))
        if limit <= 0:
            raise DatasetError(f"evaluation limit must be positive, got {limit}")
        return torch.sort(_balanced_indices(self.test.labels, limit, seed)).values

    def eval_subset_note(self, *, limit: int | None = None, seed: int = 0) -> str | None:
        """A sentence for the record when `eval_split(limit=…)` evaluates a sample rather than every image."""
        if limit is None or limit >= len(self.test):
            return None
        counts = torch.bincount(self.eval_split(limit=limit, seed=seed).labels, minlength=self.num_classes)
        present = counts[counts > 0]
        per_class = f"{int(present.min())}" if int(present.min()) == int(present.max()) else f"{int(present.min())}–{int(present.max())}"
        return (
            f"Evaluated on {limit:,} of the {len(self.test):,} evaluation images: a seeded, class-balanced sample "
            f"({per_class} per class, seed {seed})."
        )

    @functools.cached_property
    def fingerprint(self) -> str:
        """A content hash of the images, labels, classes and normalisation: a cache key that does not depend on
        where the files were unpacked (a temporary folder's name changes on every upload)."""
        digest = hashlib.sha256()
        digest.update(repr((self.class_names, self.mean, self.std)).encode())
        for split in (self.train, self.test):
            digest.update(repr(tuple(split.images.shape)).encode())
            digest.update(split.images.contiguous().numpy().tobytes())
            digest.update(split.labels.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def calibration_split(self, *, size: int, seed: int = 0) -> Split:
        """`size` images drawn from the training pool under `seed`, class-balanced; never from the evaluation split."""
        return self.train.subset(_balanced_indices(self.train.labels, size, seed))

    def validation_split(self, *, size: int, seed: int = VALIDATION_SEED) -> Split:
        """`size` class-balanced images of the training pool for choosing between candidates (a search's winner):
        never evaluation images, so the evaluation split can confirm the choice without having made it. Its own
        seed gives another sample than calibration's default one."""
        return self.train.subset(_balanced_indices(self.train.labels, min(size, len(self.train)), seed))

    def training_split(self, *, limit: int | None = None, seed: int = 0) -> Split:
        """A shuffled slice of the training pool for fine-tuning."""
        n = len(self.train) if limit is None else min(limit, len(self.train))
        gen = torch.Generator().manual_seed(seed)
        return self.train.subset(torch.randperm(len(self.train), generator=gen)[:n])

    def batches(
        self, split: Split, *, batch_size: int = 256
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised (inputs, labels) batches in order."""
        for start in range(0, len(split), batch_size):
            yield (
                self.normalize(split.images[start : start + batch_size]),
                split.labels[start : start + batch_size],
            )

    def describe(self) -> str:
        return f"{self.name} — {len(self.test):,} eval / {len(self.train):,} train images ({self.source})"


def _balanced_indices(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """`size` indices, round-robin over the classes in a seeded order: equal counts per class while every class
    still has images left, then the larger classes fill up. The first k picks are the same for any size ≥ k."""
    if size <= 0:
        raise DatasetError(f"calibration size must be positive, got {size}")
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=gen)
    if size >= len(labels):
        return perm
    # Round-robin over classes in a seeded order, so even 10 samples cover every class.
    by_class = [perm[labels[perm] == c] for c in torch.unique(labels).tolist()]
    picked: list[int] = []
    depth = 0
    while len(picked) < size:
        for idx in by_class:
            if depth < len(idx) and len(picked) < size:
                picked.append(int(idx[depth]))
        depth += 1
    return torch.tensor(picked, dtype=torch.long)


# --------------------------------------------------------------------------- Fashion-MNIST


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}. Delete it or replace it with a fresh copy.") from exc
    if len(data) < 8:
        raise DatasetError(f"{path} is not an IDX file (too short).")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if data[2] != 0x08 or len(data) - offset != expected:
        raise DatasetError(f"{path} is truncated or not a uint8 IDX file; replace it with a fresh copy.")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _idx_folder_complete(folder: Path) -> bool:
    return folder.is_dir() and all(_find_idx(folder, stem) for stem in _IDX_FILES.values())


def _load_idx_folder(folder: Path, source: str) -> Dataset:
    arrays = {key: _read_idx(_find_idx(folder, stem)) for key, stem in _IDX_FILES.items()}  # type: ignore[arg-type]
    return _fashion_dataset(
        train=Split(torch.from_numpy(arrays["train_images"].copy()).unsqueeze(1), torch.from_numpy(arrays["train_labels"].astype(np.int64))),
        test=Split(torch.from_numpy(arrays["test_images"].copy()).unsqueeze(1), torch.from_numpy(arrays["test_labels"].astype(np.int64))),
        source=source,
    )


def _fashion_dataset(*, train: Split, test: Split, source: str, notes: tuple[str, ...] = ()) -> Dataset:
    return Dataset(
        name="Fashion-MNIST",
        source=source,
        train=train,
        test=test,
        class_names=FASHION_MNIST_CLASSES,
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
        license=FASHION_MNIST_LICENSE,
        notes=notes,
    )


def load_bundled_subset(*, path: Path = BUNDLED_SUBSET) -> Dataset:
    """The small real subset shipped in the repo: held-out test images plus a disjoint slice of training images."""
    if not path.is_file():
        raise DatasetError(f"the bundled Fashion-MNIST subset is missing ({path}); restore it from git.")
    with np.load(path) as npz:
        train = Split(torch.from_numpy(npz["train_images"]).unsqueeze(1), torch.from_numpy(npz["train_labels"].astype(np.int64)))
        test = Split(torch.from_numpy(npz["test_images"]).unsqueeze(1), torch.from_numpy(npz["test_labels"].astype(np.int64)))
    return _fashion_dataset(
        train=train,
        test=test,
        source=f"bundled subset ({path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path})",
        notes=(
            f"Only {len(test):,} of the 10,000 test images are bundled: accuracy is an estimate "
            "(install Debian's dataset-fashion-mnist or put the files in data/ for the full set).",
        ),
    )


def _internet_reachable(host: str = "ossci-datasets.s3.amazonaws.com", timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _torchvision_download(root: Path) -> Dataset | None:
    if os.environ.get("CI") or os.environ.get("COMPRESSION_STUDIO_OFFLINE") or not _internet_reachable():
        return None
    try:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(root), train=True, download=True)
        FashionMNIST(str(root), train=False, download=True)
    except Exception:
        return None
    raw = root / "FashionMNIST" / "raw"
    return _load_idx_folder(raw, f"torchvision download ({raw})") if _idx_folder_complete(raw) else None


def fashion_mnist_candidates(data_dir: Path) -> list[tuple[str, Path]]:
    """Folders searched for the full dataset, in priority order."""
    return [
        ("data/ folder", data_dir / "fashion-mnist"),
        ("data/ folder", data_dir / "FashionMNIST" / "raw"),
        ("data/ folder", data_dir),
        ("Debian package dataset-fashion-mnist", DEBIAN_FASHION_MNIST),
    ]


def load_fashion_mnist(
    *,
    data_dir: Path | None = None,
    allow_download: bool = True,
    search_system: bool = True,
    bundled_path: Path = BUNDLED_SUBSET,
) -> Dataset:
    """Find Fashion-MNIST: `data/`, Debian's package, torchvision's download, then the bundled subset.

    Cached per argument set: the full dataset is parsed once per process (its tensors are never mutated).
    """
    data_dir = data_dir or Path(os.environ.get("COMPRESSION_STUDIO_DATA", PROJECT_ROOT / "data"))
    return _load_fashion_mnist_cached(Path(data_dir), allow_download, search_system, Path(bundled_path))


@functools.lru_cache(maxsize=4)
def _load_fashion_mnist_cached(data_dir: Path, allow_download: bool, search_system: bool, bundled_path: Path) -> Dataset:
    for label, folder in fashion_mnist_candidates(data_dir):
        if label.startswith("Debian") and not search_system:
            continue
        if _idx_folder_complete(folder):
            return _load_idx_folder(folder, f"{label} ({folder})")
    if allow_download:
        downloaded = _torchvision_download(data_dir)
        if downloaded is not None:
            return downloaded
    return load_bundled_subset(path=bundled_path)


# --------------------------------------------------------------------------- user ImageFolder


def load_image_folder(
    path: Path,
    *,
    image_size: tuple[int, int],
    channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    expected_classes: int | None = None,
    calibration_fraction: float = 0.2,
    seed: int = 0,
    max_images: int = 20_000,
    max_decoded_bytes: int = 1_500_000_000,
    extract_to: Path | None = None,
    zip_limits: ZipLimits = DEFAULT_ZIP_LIMITS,
    preprocessing: Preprocessing | None = None,
) -> Dataset:
    """An ImageFolder directory (or .zip of one): class sub-folders of images.

    If it has `train/` and `val/` (or `test/`) sub-folders, those are the splits; otherwise a seeded,
    class-stratified `calibration_fraction` of each class becomes the training pool and the rest is
    evaluated, so the two never overlap.

    A .zip is checked (size, entry count, nesting, paths: core.safe_zip) and extracted into `extract_to`, a
    folder the caller owns and removes; without one it goes to a temporary folder in the data folder's staging
    area (core.paths.staging_dir) deleted before returning
    (every image is decoded into memory, so the files are not needed afterwards).

    Images of any size and mode (grayscale, RGBA, palette, 16-bit) are converted the same way (to `channels`
    and `image_size`): with the model's `preprocessing`, the shorter side is resized (its interpolation) and the
    centre cropped, as the model was trained; without one, each image is resized straight to `image_size`. Unreadable files are skipped and counted in `Dataset.notes`. When a folder holds more
    than `max_images` images (or more than `max_decoded_bytes` once decoded), a seeded, class-balanced sample
    is read and a note says so: no class is dropped.
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".zip":
        options = dict(
            image_size=image_size, channels=channels, mean=mean, std=std, expected_classes=expected_classes,
            calibration_fraction=calibration_fraction, seed=seed, max_images=max_images,
            max_decoded_bytes=max_decoded_bytes, preprocessing=preprocessing,
        )
        if extract_to is not None:
            _extract_zip(path, Path(extract_to), zip_limits)
            return _load_image_dir(Path(extract_to), source=f"user zip ({path.name})", **options)
        scratch = staging_dir()  # the data folder's staging area: stale left-overs are removed when the store opens
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="unzip_imagefolder_", dir=scratch) as tmp:
            _extract_zip(path, Path(tmp), zip_limits)
            return _load_image_dir(Path(tmp), source=f"user zip ({path.name})", **options)
    if not path.is_dir():
        raise DatasetError(f"{path} is not a folder or .zip; upload a folder with one sub-folder per class.")
    return _load_image_dir(
        path, source=f"user folder ({path})", image_size=image_size, channels=channels, mean=mean, std=std,
        expected_classes=expected_classes, calibration_fraction=calibration_fraction, seed=seed,
        max_images=max_images, max_decoded_bytes=max_decoded_bytes, preprocessing=preprocessing,
    )


def _load_image_dir(
    path: Path,
    *,
    source: str,
    image_size: tuple[int, int],
    channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    expected_classes: int | None,
    calibration_fraction: float,
    seed: int,
    max_images: int,
    max_decoded_bytes: int,
    preprocessing: Preprocessing | None = None,
) -> Dataset:
    _check_image_dir_options(channels=channels, mean=mean, std=std, calibration_fraction=calibration_fraction,
                             max_images=max_images, max_decoded_bytes=max_decoded_bytes)
    root = _single_top_folder(path)
    split_dirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    explicit = "train" in split_dirs and ("val" in split_dirs or "test" in split_dirs)
    class_names = _class_folder_names(root, split_dirs["train"] if explicit else root, expected_classes=expected_classes)
    reader = _ImageFolderReader(
        class_names=class_names,
        cap=_images_that_fit(n_classes=len(class_names), image_size=image_size, channels=channels,
                             max_images=max_images, max_decoded_bytes=max_decoded_bytes),
        image_size=image_size, channels=channels, seed=seed, max_images=max_images,
        max_decoded_bytes=max_decoded_bytes, preprocessing=preprocessing,
    )
    if explicit:
        train = reader.read(split_dirs["train"], "train/")
        held_out = split_dirs.get("val") or split_dirs["test"]
        test = reader.read(held_out, f"{held_out.name}/")
    else:
        train, test = _calibration_and_evaluation(reader.read(root, root.name), n_classes=len(class_names),
                                                  calibration_fraction=calibration_fraction, seed=seed)
    return Dataset(
        name=f"ImageFolder {root.name}",
        source=source,
        train=train,
        test=test,
        class_names=class_names,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        notes=tuple(reader.notes) + ((f"Images prepared as the model expects: {preprocessing.describe()}.",)
                                     if preprocessing is not None else ()),
    )


def _check_image_dir_options(
    *,
    channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    calibration_fraction: float,
    max_images: int,
    max_decoded_bytes: int,
) -> None:
    if channels not in (1, 3):
        raise DatasetError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}.")
    if len(mean) != channels or len(std) != channels:
        raise DatasetError(f"mean and std need {channels} values each (one per channel).")
    if not 0.0 < calibration_fraction < 1.0:
        raise DatasetError("calibration_fraction must be between 0 and 1.")
    if max_images <= 0 or max_decoded_bytes <= 0:
        raise DatasetError("max_images and max_decoded_bytes must be positive.")


def _class_folder_names(root: Path, class_root: Path, *, expected_classes: int | None) -> tuple[str, ...]:
    """The sorted class folder names under `class_root`; at least two, and as many as the model has outputs."""
    class_names = tuple(sorted(p.name for p in class_root.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX"))))
    if not class_names:
        raise DatasetError(
            f"{root.name} has no class folders. Expected layout: <root>/<class name>/<image files>, "
            "optionally inside train/ and val/ folders."
        )
    if len(class_names) == 1:
        raise DatasetError(
            f"{root.name} has only one class folder ('{class_names[0]}'): accuracy needs at least two classes. "
            "Add one sub-folder of images per class the model predicts."
        )
    if expected_classes is not None and len(class_names) != expected_classes:
        raise DatasetError(
            f"the dataset has {len(class_names)} classes ({', '.join(class_names[:10])}) but the model has "
            f"{expected_classes} outputs; choose a dataset with {expected_classes} class folders."
        )
    return class_names


def _images_that_fit(
    *, n_classes: int, image_size: tuple[int, int], channels: int, max_images: int, max_decoded_bytes: int
) -> int:
    """How many images one folder may decode: the image count and the decoded-bytes limits, whichever is tighter."""
    bytes_per_image = channels * int(image_size[0]) * int(image_size[1])
    cap = min(max_images, max(1, max_decoded_bytes // bytes_per_image))
    if cap < n_classes:
        raise DatasetError(
            f"only {cap:,} images fit the limits (max_images={max_images:,}, {fmt_bytes(max_decoded_bytes)} decoded) but "
            f"there are {n_classes} classes; raise the limits so that every class gets images."
        )
    return cap


@dataclass
class _ImageFolderReader:
    """Reads one folder of class sub-folders into a Split, collecting what it sampled or skipped in `notes`."""

    class_names: tuple[str, ...]
    cap: int
    image_size: tuple[int, int]
    channels: int
    seed: int
    max_images: int
    max_decoded_bytes: int
    preprocessing: Preprocessing | None
    notes: list[str] = field(default_factory=list)

    def read(self, folder: Path, label: str) -> Split:
        files, labels, ignored = self._list_images(folder)
        label_tensor = torch.tensor(labels, dtype=torch.long)
        chosen = self._sample(label_tensor, label=label)
        images: list[np.ndarray] = []
        kept: list[int] = []
        unreadable: list[str] = []
        for i in chosen.tolist():
            try:
                images.append(_read_image(files[i], mode="L" if self.channels == 1 else "RGB", size=self.image_size,
                                          preprocessing=self.preprocessing))
                kept.append(labels[i])
            except _UNREADABLE:
                unreadable.append(str(files[i].relative_to(folder)))
        shown = ", ".join(unreadable[:5]) + (" …" if len(unreadable) > 5 else "")
        if unreadable:
            self.notes.append(f"Skipped {len(unreadable):,} unreadable image file(s) in {label}: {shown}.")
        if ignored:
            self.notes.append(f"Ignored {ignored:,} non-image file(s) in {label} (supported: {', '.join(IMAGE_SUFFIXES)}).")
        if not images:
            raise DatasetError(f"none of the {len(unreadable):,} image files under {folder.name}/ could be read: {shown}.")
        self._check_every_sampled_class_kept(kept, label_tensor[chosen], label=label)
        return Split(torch.from_numpy(np.stack(images)), torch.tensor(kept, dtype=torch.long))

    def _list_images(self, folder: Path) -> tuple[list[Path], list[int], int]:
        """Image files and their class indices under `folder`, and how many non-image files were passed over."""
        files: list[Path] = []
        labels: list[int] = []
        ignored = 0
        for index, name in enumerate(self.class_names):
            class_dir = folder / name
            if not class_dir.is_dir():
                raise DatasetError(f"class folder '{name}' is missing from {folder.name}/.")
            for file in sorted(class_dir.rglob("*")):
                if not file.is_file() or file.name.startswith("."):
                    continue
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    ignored += 1
                    continue
                files.append(file)
                labels.append(index)
        if not files:
            raise DatasetError(f"no images found under {folder.name}/ (supported: {', '.join(IMAGE_SUFFIXES)}).")
        return files, labels, ignored

    def _sample(self, labels: torch.Tensor, *, label: str) -> torch.Tensor:
        """Every index, or a seeded class-balanced sample of `cap` of them (with a note saying which limit)."""
        if len(labels) <= self.cap:
            return torch.arange(len(labels))
        why = (
            f"max_images={self.max_images:,}" if self.cap == self.max_images
            else f"{fmt_bytes(self.max_decoded_bytes)} of decoded images at "
            f"{self.image_size[0]}×{self.image_size[1]}×{self.channels}"
        )
        self.notes.append(
            f"{label} holds {len(labels):,} images; a seeded, class-balanced sample of {self.cap:,} was read "
            f"(every class kept) to stay within {why}."
        )
        return torch.sort(_balanced_indices(labels, self.cap, self.seed)).values

    def _check_every_sampled_class_kept(self, kept: list[int], sampled: torch.Tensor, *, label: str) -> None:
        """A class whose every sampled image was unreadable would vanish from the evaluation: refuse instead."""
        counts = np.bincount(np.asarray(kept, dtype=np.int64), minlength=len(self.class_names))
        empty = [name for c, name in enumerate(self.class_names) if counts[c] == 0 and bool((sampled == c).any())]
        if empty:
            raise DatasetError(
                f"no readable images in class folder(s) {', '.join(empty)} of {label}; add images there or remove the folder."
            )


def _calibration_and_evaluation(
    everything: Split, *, n_classes: int, calibration_fraction: float, seed: int
) -> tuple[Split, Split]:
    """Seeded per-class split of one folder into disjoint calibration and evaluation parts."""
    gen = torch.Generator().manual_seed(seed)
    train_idx: list[torch.Tensor] = []
    test_idx: list[torch.Tensor] = []
    for c in range(n_classes):
        idx = torch.nonzero(everything.labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_cal = max(1, round(len(idx) * calibration_fraction)) if len(idx) > 1 else 0
        train_idx.append(idx[:n_cal])
        test_idx.append(idx[n_cal:])
    train = everything.subset(torch.cat(train_idx))
    test = everything.subset(torch.cat(test_idx))
    if len(train) == 0 or len(test) == 0:
        raise DatasetError("too few images to make disjoint calibration and evaluation splits; add more images.")
    return train, test


def _unreadable_errors() -> tuple[type[BaseException], ...]:
    from PIL import Image, UnidentifiedImageError

    return (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


_UNREADABLE = _unreadable_errors()


def _read_image(file: Path, *, mode: str, size: tuple[int, int], preprocessing: Preprocessing | None = None) -> np.ndarray:
    """One image file → uint8 C×H×W in `mode` ('L' or 'RGB') at `size` (H, W), whatever its own mode and size.

    16-bit and 32-bit integer images are scaled to 8 bits (Pillow's own conversion would clip them to
    white); palette images go through RGBA so their transparency is honoured; alpha is then dropped, as
    torchvision's ImageFolder loader does, so the images match what such models were trained on.
    """
    from PIL import Image

    with Image.open(file) as img:
        img.load()
        if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            arr = np.asarray(img, dtype=np.float64)
            top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
            if img.mode == "F" and arr.max(initial=0) <= 1.0:
                top = 1.0
            img = Image.fromarray(np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8), mode="L")
        elif img.mode == "P":
            img = img.convert("RGBA")
        out = img.convert(mode)
        out = _resize_and_crop(out, size=size, preprocessing=preprocessing) if preprocessing else out.resize((int(size[1]), int(size[0])))
        arr = np.asarray(out, dtype=np.uint8)
    return arr[None] if mode == "L" else arr.transpose(2, 0, 1).copy()


def _resize_and_crop(img, *, size: tuple[int, int], preprocessing: Preprocessing):  # PIL.Image → PIL.Image
    """Shorter side → the model's resize size (its interpolation), then the centre `size` crop (torchvision's
    Resize + CenterCrop). A `size` other than the model's crop keeps the model's resize ÷ crop ratio."""
    from PIL import Image

    height, width = int(size[0]), int(size[1])
    ratio = preprocessing.resize_size / preprocessing.crop_size
    short = max(round(max(height, width) * ratio), height, width)
    scale = short / min(img.size)
    new_w, new_h = max(width, round(img.size[0] * scale)), max(height, round(img.size[1] * scale))
    resample = Image.Resampling[preprocessing.interpolation.upper()]
    img = img.resize((new_w, new_h), resample=resample)
    left, top = round((new_w - width) / 2.0), round((new_h - height) / 2.0)
    return img.crop((left, top, left + width, top + height))


def _single_top_folder(path: Path) -> Path:
    """A zip often wraps everything in one folder; look inside it."""
    entries = [p for p in path.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir():
        inner = [p for p in entries[0].iterdir() if p.is_dir()]
        if inner:
            return entries[0]
    return path


def _extract_zip(archive: Path, into: Path, limits: ZipLimits) -> None:
    try:
        extract_zip(archive, into=into, limits=limits)
    except UnsafeZipError as exc:
        raise DatasetError(str(exc)) from None


# --------------------------------------------------------------------------- synthetic inputs

SyntheticPurpose = Literal["calibration", "evaluation", "timing"]
# Each purpose draws from its own generator seed, so evaluation inputs never repeat calibration inputs (which
# would flatter agreement and SNR for calibrated methods). Torch's CPU generator keeps only the low 32 bits of a
# seed, so the 32-bit seed space is cut into disjoint ranges: seeds are < 2**30 and each purpose adds its own
# multiple of 2**30. Calibration keeps the plain seed, so calibrated results are unchanged from earlier releases.
_SEED_RANGE = 1 << 30
_PURPOSE_OFFSET: dict[str, int] = {"calibration": 0, "evaluation": _SEED_RANGE, "timing": 2 * _SEED_RANGE}


def synthetic_inputs(
    *,
    input_shape: tuple[int, int, int],
    count: int,
    seed: int = 0,
    purpose: SyntheticPurpose | None = None,
) -> torch.Tensor:
    """Standard-normal inputs of the right shape, for models with no matching dataset (size/latency only).

    `purpose` picks a seed stream: "calibration" (fitting quantization ranges), "evaluation" (comparing
    outputs with the baseline) or "timing" (latency). Two purposes never share a stream, whatever the seed.
    Leaving it out means "calibration" (the stream every caller used before purposes existed).
    """
    purpose = purpose or "calibration"
    if purpose not in _PURPOSE_OFFSET:
        raise ValueError(f"purpose must be one of {', '.join(_PURPOSE_OFFSET)}, got {purpose!r}")
    if not 0 <= int(seed) < _SEED_RANGE:
        raise ValueError(f"seed must be between 0 and 2**30 - 1, got {seed}")
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    gen = torch.Generator().manual_seed(_PURPOSE_OFFSET[purpose] + int(seed))
    return torch.randn((count, *input_shape), generator=gen)


def resolve_dataset(
    *,
    choice: str = "auto",
    input_shape: tuple[int, int, int] = (1, 28, 28),
    mean: Sequence[float] = FASHION_MNIST_MEAN,
    std: Sequence[float] = FASHION_MNIST_STD,
    num_classes: int | None = None,
    preprocessing: Preprocessing | None = None,
) -> Dataset:
    """A dataset by name, as the CLI's --data takes it: 'auto' (discovery order), 'bundled', or a path to
    an IDX folder (Fashion-MNIST files) / ImageFolder directory / .zip, read at the model's input size."""
    if choice == "auto":
        return load_fashion_mnist()
    if choice == "bundled":
        return load_bundled_subset()
    path = Path(choice)
    if not path.exists():
        raise DatasetError(f"--data {choice}: no such file or folder; use 'auto', 'bundled' or a dataset path.")
    if _idx_folder_complete(path):
        return _load_idx_folder(path, f"IDX folder ({path})")
    return load_image_folder(
        path, image_size=input_shape[1:], channels=input_shape[0], mean=mean, std=std, expected_classes=num_classes,
        preprocessing=preprocessing,
    )
