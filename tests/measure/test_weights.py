"""weights.npz: paired seeded samples of original/compressed values plus LUT / scale grids, no pickle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from core.measure.weights import read_weights_npz, write_weights_npz


def test_weights_npz_pairs_samples_and_keeps_grids(tmp_path: Path) -> None:
    original = torch.randn(300, 400, generator=torch.Generator().manual_seed(0))
    lut = torch.linspace(-2, 2, 16)
    compressed = lut[(original.clamp(-2, 2) + 2).div(4 / 15).round().long()]
    weights = {
        "big": {"original": original, "compressed": compressed, "lut": lut, "method": "palettize"},
        "small": {"original": torch.ones(10), "compressed": torch.zeros(10), "scale": torch.tensor(0.5)},
    }
    path = write_weights_npz(weights=weights, path=tmp_path / "weights.npz", max_values=5000, seed=3)
    assert path == tmp_path / "weights.npz" and not list(tmp_path.glob(".*tmp"))
    with np.load(path, allow_pickle=False) as npz:
        assert set(npz.files) == {"big/original", "big/compressed", "big/lut", "small/original", "small/compressed", "small/scale"}
    loaded = read_weights_npz(path)
    big = loaded["big"]
    assert big["original"].shape == (5000,) and big["compressed"].shape == (5000,)
    # the same positions were sampled in both: each compressed value is the LUT entry nearest its original
    sampled = torch.from_numpy(big["original"])
    assert np.array_equal(lut[(sampled.clamp(-2, 2) + 2).div(4 / 15).round().long()].numpy(), big["compressed"])
    assert len(np.unique(big["compressed"])) <= 16
    assert loaded["small"]["original"].shape == (10,) and loaded["small"]["scale"].tolist() == [0.5]


def test_nothing_to_write_gives_none(tmp_path: Path) -> None:
    assert write_weights_npz(weights={}, path=tmp_path / "w.npz") is None
    assert not (tmp_path / "w.npz").exists()
