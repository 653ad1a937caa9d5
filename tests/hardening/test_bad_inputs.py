"""Bad input, through the functions the pages call: each gives a clear message (no traceback), nothing saved is lost.

Also covered elsewhere, closer to the code: zip limits (tests/test_safe_zip.py), TorchScript that loops forever or
allocates 20 GB on load, returns no class scores or has NaN weights (tests/models/test_torchscript_probe.py).
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from core.compress import compress
from core.data import DatasetError
from core.dataset_choice import load_dataset_kind
from core.models.sources import ModelLoadError, load_model
from core.specs import PalettizeSpec, PruneSpec
from tests.hardening.conftest import write_zip as _zip
from tests.hardening.conftest import zip_bomb


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")  # uint16 → a 16-bit PNG
    return buffer.getvalue()


def _folder_kwargs(channels: int = 3) -> dict:
    return dict(kind="folder", image_size=(16, 16), channels=channels, mean=(0.5,) * channels, std=(0.5,) * channels)


def test_image_folder_zip_bomb(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path / "home"))
    archive = zip_bomb(tmp_path / "bomb.zip")
    assert archive.stat().st_size < 5_000
    with pytest.raises(DatasetError, match=r"bomb\.zip would expand to more than 2\.00 GB .* refused before extracting anything\. Upload a smaller zip\."):
        load_dataset_kind(path=archive, **_folder_kwargs())
    assert list((tmp_path / "home" / "tmp").iterdir()) == []  # nothing extracted stays behind


def test_image_folder_zip_with_100_000_entries(tmp_path):
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for k in range(100_000):
            zf.writestr(f"ds/c{k % 10}/{k}.png", b"")
    with pytest.raises(DatasetError, match=r"many\.zip holds 100,000 entries; at most 50,000 are accepted\. Upload fewer files"):
        load_dataset_kind(path=archive, **_folder_kwargs())


def test_image_folder_with_one_class(tmp_path):
    gray = np.full((8, 8), 128, dtype=np.uint8)
    archive = _zip(tmp_path / "one.zip", {f"pets/cat/{i}.png": _png(gray) for i in range(4)})
    with pytest.raises(DatasetError, match=r"only one class folder \('cat'\): accuracy needs at least two classes"):
        load_dataset_kind(path=archive, **_folder_kwargs())


def test_image_folder_with_mixed_sizes_and_modes(tmp_path):
    """Grayscale, RGBA and 16-bit PNGs of different sizes all become the requested size and channels."""
    rng = np.random.default_rng(0)
    members = {
        "mix/a/gray.png": _png(rng.integers(0, 256, (20, 30), dtype=np.uint8)),
        "mix/a/rgba.png": _png(rng.integers(0, 256, (12, 9, 4), dtype=np.uint8)),
        "mix/a/gray16.png": _png(np.full((40, 40), 65535, dtype=np.uint16)),
        "mix/b/rgb.png": _png(rng.integers(0, 256, (64, 16, 3), dtype=np.uint8)),
        "mix/b/gray.png": _png(rng.integers(0, 256, (7, 7), dtype=np.uint8)),
        "mix/b/rgba.png": _png(rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)),
    }
    archive = _zip(tmp_path / "mix.zip", members)
    for channels in (3, 1):
        dataset = load_dataset_kind(path=archive, **_folder_kwargs(channels))
        images = torch.cat([dataset.train.images, dataset.test.images])
        assert images.shape[1:] == (channels, 16, 16) and len(images) == 6
    # The 16-bit white image is white at 8 bits, not clipped or wrapped.
    assert int(images.max()) == 255


def test_image_folder_with_a_corrupt_image_is_skipped_and_counted(tmp_path):
    gray = np.full((8, 8), 200, dtype=np.uint8)
    members = {f"pets/{c}/{i}.png": _png(gray) for c in ("cat", "dog") for i in range(4)}
    members["pets/dog/broken.png"] = b"\x89PNG\r\n\x1a\n this is not really a png"
    dataset = load_dataset_kind(path=_zip(tmp_path / "pets.zip", members), **_folder_kwargs())
    assert len(dataset.train) + len(dataset.test) == 8
    assert any("Skipped 1 unreadable image file(s)" in note and "broken.png" in note for note in dataset.notes)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_state_dict_with_nan_and_inf_weights(tmp_path, suffix):
    state = load_model("sample:fashion_cnn").module.state_dict()
    state["classifier.4.weight"][0, 0] = float("nan")
    state["features.1.running_var"][1] = float("inf")
    path = tmp_path / f"bad{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, str(path))
    with pytest.raises(ModelLoadError, match=rf"bad\{suffix} has NaN or infinite values in 2 tensor\(s\): .*"
                       r"training diverged; use weights saved from a healthy checkpoint"):
        load_model(f"state_dict:fashion_cnn:{path}")


def test_group_size_not_dividing_a_layers_channels_reports_that_layer():
    model = load_model("sample:fashion_cnn")
    spec = PalettizeSpec(n_bits=4, granularity="per_grouped_channel", group_size=4, weight_threshold=0)
    result = compress(model=model, spec=spec, dataset=None)
    by_name = {layer.name: layer for layer in result.layers}
    assert not by_name["classifier.4"].compressed  # 10 output channels
    assert by_name["classifier.4"].reason == "output channels (10) not divisible by group_size 4"
    assert all(by_name[n].compressed for n in ("features.3", "classifier.1"))  # 32 and 256 channels: fine


def test_n_m_on_a_layer_whose_input_size_is_not_a_multiple_of_m():
    model = load_model("sample:fashion_cnn")
    result = compress(model=model, spec=PruneSpec(structure="n_m", n_m=(2, 4), weight_threshold=0), dataset=None)
    by_name = {layer.name: layer for layer in result.layers}
    assert not by_name["features.0"].compressed  # one input channel (grayscale)
    assert by_name["features.0"].reason == "input channels (1) not divisible by m=4 for 2:4 sparsity"
    assert by_name["features.3"].compressed
