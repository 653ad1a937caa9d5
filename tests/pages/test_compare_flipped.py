"""Compare → Flipped images: every thumbnail is the image its caption describes.

The experiments evaluate a seeded, class-balanced sample of each dataset (fewer images than the dataset holds), the
case where a position among the evaluated images and a position in the dataset differ. For every thumbnail the
page shows, the test decodes the PNG the browser receives and checks it pixel for pixel against the dataset image
at the record's index, that the image's true class is the caption's, and that the uncompressed model, run on the
shown pixels, predicts the caption's "before" class.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

from core.data import Dataset, DatasetError, load_bundled_subset
from core.dataset_choice import load_dataset_kind
from core.experiment_options import ExperimentOptions
from core.models.sources import load_model
from core.runs import run_and_save
from core.specs import spec_from_dict
from core.store import ExperimentStore
from core.tables import flipped_frame
from tests.pages.conftest import SAMPLE, assert_clean

THUMBNAIL_PIXELS = 112  # pages/_ui/loading.thumbnail's default size
FOLDER_CHOICE = {"kind": "folder", "size": [28, 28], "channels": 1, "mean": [0.2860], "std": [0.3530]}


@pytest.fixture
def media_bytes(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """The bytes of every image the page hands to the browser, by media file id (the URL's file name)."""
    sent: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def remember(self, path_or_data, mimetype, kind, filename=None):
        file_id = original(self, path_or_data, mimetype, kind, filename)
        sent[file_id] = bytes(path_or_data)
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", remember)
    return sent


def _image_folder(root: Path) -> Path:
    """10 class folders of 14 distinct 28×28 grayscale PNGs each (random pixels, seeded)."""
    rng = np.random.default_rng(7)
    for label in range(10):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True)
        for n in range(14):
            pixels = rng.integers(0, 256, size=(28, 28), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"img_{n:02d}.png")
    return root


def _run(home: Path, dataset: Dataset, eval_limit: int) -> dict:
    assert eval_limit < len(dataset.test), "the test needs a sample smaller than the dataset"
    return run_and_save(
        store=ExperimentStore(home), model=load_model(SAMPLE), spec=spec_from_dict({"method": "palettize", "n_bits": 2}),
        dataset=dataset,
        options=ExperimentOptions(eval_limit=eval_limit, cache_dir=home / "cache", measure_latency=False,
                                  measure_memory=False, export=False),
    )


def _shown_pixels(png: bytes) -> torch.Tensor:
    """The thumbnail the browser received, scaled back to the 28×28 image it enlarges (nearest neighbour)."""
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (THUMBNAIL_PIXELS, THUMBNAIL_PIXELS)
    step = THUMBNAIL_PIXELS // 28
    return torch.from_numpy(np.asarray(image.convert("L"))[step // 2 :: step, step // 2 :: step].copy())


def _check_thumbnails(at, record: dict, dataset: Dataset, sent: dict[str, bytes]) -> int:
    rows = flipped_frame(record).head(32).to_dict("records")
    images = list(at.image)
    assert len(images) == len(rows) > 0
    model = load_model(SAMPLE).module.eval()
    for row, element in zip(rows, images, strict=True):
        caption = element.captions[0]
        assert caption.endswith(f"{row['before_name']} → {row['after_name']} (true: {row['true_name']})")
        file_id = element.value[0].rsplit("/", 1)[-1].split(".")[0]
        shown = _shown_pixels(sent[file_id])
        expected = dataset.test.images[row["index"], 0]
        assert torch.equal(shown, expected), f"thumbnail of index {row['index']} is another image"
        assert dataset.class_names[int(dataset.test.labels[row["index"]])] == row["true_name"]
        with torch.no_grad():
            before = int(model(dataset.normalize(shown.view(1, 1, 28, 28))).argmax(1))
        assert dataset.class_names[before] == row["before_name"], "the caption's prediction is not this image's"
    return len(rows)


def _open_flipped(app, *, dataset_choice: dict):
    """Choose the session's dataset (as the Model page does), then open Compare (its Flipped images tab)."""
    at = app()
    at.session_state["dataset_choice"] = dataset_choice
    at.switch_page("pages/3_Compare.py").run()
    assert_clean(at)
    return at


def test_bundled_subset_thumbnails_match_their_captions(app, tmp_path: Path, monkeypatch, media_bytes) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(home))
    dataset = load_bundled_subset()
    record = _run(home, dataset, eval_limit=600)
    assert record["flipped_index_base"] == "dataset"
    at = _open_flipped(app, dataset_choice={"kind": "bundled"})
    assert _check_thumbnails(at, record, dataset, media_bytes) >= 10


def test_full_test_set_thumbnails_match_their_captions(app, tmp_path: Path, monkeypatch, media_bytes) -> None:
    try:
        dataset = load_dataset_kind(kind="full")
    except DatasetError:
        pytest.skip("the full Fashion-MNIST test set is not installed (Debian's dataset-fashion-mnist)")
    home = tmp_path / "home"
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(home))
    record = _run(home, dataset, eval_limit=1500)
    at = _open_flipped(app, dataset_choice={"kind": "full"})
    assert _check_thumbnails(at, record, dataset, media_bytes) >= 10


def test_image_folder_sample_thumbnails_match_their_captions(app, tmp_path: Path, monkeypatch, media_bytes) -> None:
    folder = _image_folder(tmp_path / "folder")
    choice = {**FOLDER_CHOICE, "path": str(folder)}
    dataset = load_dataset_kind(kind="folder", path=folder, image_size=(28, 28), channels=1, mean=choice["mean"],
                                std=choice["std"], expected_classes=10)
    home = tmp_path / "home"
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(home))
    record = _run(home, dataset, eval_limit=len(dataset.test) // 2)  # a class-balanced half of the evaluation images
    at = _open_flipped(app, dataset_choice=choice)
    assert _check_thumbnails(at, record, dataset, media_bytes) >= 5
    files = {np.asarray(Image.open(f)).tobytes(): f.parent.name for f in folder.rglob("*.png")}
    for row in flipped_frame(record).head(32).to_dict("records"):  # each index names a file of its caption's class
        assert files[dataset.test.images[row["index"], 0].numpy().tobytes()] == row["true_name"]
