"""Bad uploads through the real app (AppTest on app.py): an st.error naming the problem, no traceback, nothing lost."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from torch import nn

from core.models.torchscript_probe import ALLOW_ENV
from core.store import ExperimentStore
from tests.hardening.conftest import zip_bomb


@pytest.fixture(scope="module")
def studio_home(tmp_path_factory: pytest.TempPathFactory, sample_model: str) -> Path:
    """A data folder with one saved experiment, which no bad upload may touch."""
    home = tmp_path_factory.mktemp("studio_home_bad_inputs")
    ExperimentStore(home).add({"model": sample_model, "method": "palettize", "spec_summary": "kept"})
    return home


def _nothing_lost(at, home: Path) -> None:
    assert not at.exception, [e.value for e in at.exception]
    sidebar = " ".join(m.value for m in at.sidebar.markdown)
    assert "fashion_cnn (sample)" in sidebar  # still working on the model it had
    assert "Experiments:** 1" in sidebar
    assert ExperimentStore(home).get(1)["spec_summary"] == "kept"
    assert not any("Traceback" in e.value for e in at.error)


def test_zip_bomb_dataset_upload(app, studio_home, tmp_path) -> None:
    at = app(page="pages/1_Model.py")
    at.radio(key="cfg.data.kind").set_value("folder").run()
    bomb = zip_bomb(tmp_path / "bomb.zip").read_bytes()
    at.file_uploader(key="data.upload").set_value(("bomb.zip", bomb, "application/zip")).run()
    at.button(key="data.apply").click().run()
    assert len(at.error) == 1
    message = at.error[0].value
    assert message.startswith("Loading the dataset failed: ") and "bomb.zip would expand to more than 2.00 GB" in message
    assert "refused before extracting anything" in message
    _nothing_lost(at, studio_home)


def test_state_dict_with_nan_weights_upload(app, studio_home) -> None:
    from core.models.sources import load_model

    state = load_model("sample:fashion_cnn").module.state_dict()
    state["classifier.4.weight"][0, :2] = float("nan")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    at = app(page="pages/1_Model.py")
    at.radio(key="cfg.model.kind").set_value("state_dict").run()
    at.selectbox(key="cfg.model.sd_arch").select("fashion_cnn").run()
    at.file_uploader(key="model.sd_upload").set_value(("diverged.pt", buffer.getvalue(), "application/octet-stream")).run()
    at.button(key="model.load_sd").click().run()
    assert len(at.error) == 1
    assert "Loading the model failed: " in at.error[0].value
    assert "diverged.pt has NaN or infinite values in 1 tensor(s): classifier.4.weight (2 NaN)" in at.error[0].value
    _nothing_lost(at, studio_home)


class _ReturnsImages(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def test_torchscript_can_be_turned_off_and_a_non_classifier_is_refused(app, studio_home, monkeypatch) -> None:
    # AppTest serves on localhost, where TorchScript is allowed by default; the setting turns it off (beyond
    # localhost it is off unless set: tests/models/test_torchscript_probe.py).
    monkeypatch.setenv(ALLOW_ENV, "off")
    at = app(page="pages/1_Model.py")
    at.radio(key="cfg.model.kind").set_value("torchscript").run()
    assert any("A TorchScript file is a program**, not just weights" in w.value and "only files you trust" in w.value
               for w in at.warning)
    assert any(f"TorchScript uploads are turned off ({ALLOW_ENV}=off)" in i.value for i in at.info)
    assert not at.get("file_uploader") or all(u.key != "model.ts_upload" for u in at.get("file_uploader"))

    monkeypatch.setenv(ALLOW_ENV, "1")
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(_ReturnsImages()), buffer)
    at = app(page="pages/1_Model.py")
    at.radio(key="cfg.model.kind").set_value("torchscript").run()
    at.file_uploader(key="model.ts_upload").set_value(("images.pt", buffer.getvalue(), "application/octet-stream")).run()
    at.button(key="model.load_ts").click().run()
    assert len(at.error) == 1
    assert "Loading the model failed: images.pt does not return class scores" in at.error[0].value
    _nothing_lost(at, studio_home)


def test_disk_space_panel_shows_parts_and_frees_space(app, studio_home) -> None:
    cache = studio_home / "cache" / "baseline_eval"
    cache.mkdir(parents=True, exist_ok=True)
    old = cache / "stale.npz"
    old.write_bytes(b"\0" * 10_000)
    import os

    os.utime(old, (1_000_000, 1_000_000))
    at = app(page="pages/1_Model.py")
    table = next(d.value for d in at.dataframe if "part" in d.value.columns)
    assert {"Saved experiments", "Baseline logits cache", "Uploads"} <= set(table["part"])
    at.button(key="model.disk.free").click().run()
    assert not at.exception
    assert any(s.value.startswith("Freed 10.00 kB") for s in at.success), [s.value for s in at.success]
    assert not old.exists()
    _nothing_lost(at, studio_home)
