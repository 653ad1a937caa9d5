"""The experiment store: real SQLite and real folders in a temp directory."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core.progress import Cancelled
from core.store import ExperimentStore, StoreError, default_home
from tests.conftest import make_record


@pytest.fixture
def store(tmp_path: Path) -> ExperimentStore:
    return ExperimentStore(tmp_path / "home")


def test_add_get_round_trip_survives_reopen(store: ExperimentStore) -> None:
    with store.staging() as staging:
        (staging / "model.mlpackage").mkdir()
        (staging / "model.mlpackage" / "weight.bin").write_bytes(b"x" * 1234)
        record = make_record()
        record["artifact_path"] = str(staging / "model.mlpackage")
        record["output_snr_db"] = float("inf")  # not JSON: stored as null
        experiment_id = store.add(record, staging_dir=staging)
    assert not staging.exists()  # renamed into place

    reopened = ExperimentStore(store.home)
    got = reopened.get(experiment_id)
    assert got["id"] == experiment_id
    assert got["accuracy_top1"] == 0.90
    assert got["output_snr_db"] is None
    assert Path(got["artifact_path"]) == reopened.experiment_dir(experiment_id) / "model.mlpackage"
    assert (Path(got["artifact_path"]) / "weight.bin").read_bytes() == b"x" * 1234
    assert reopened.count() == 1
    assert reopened.count(model="sample:fashion_cnn") == 1
    assert reopened.count(model="other") == 0
    assert reopened.models()[0]["count"] == 1
    with sqlite3.connect(reopened.db_path) as conn:
        row = conn.execute("SELECT method, accuracy_top1, size_bytes, record FROM experiments").fetchone()
    assert row[:3] == ("palettize", 0.90, 400_000)
    assert json.loads(row[3])["artifact_path"] == "model.mlpackage"  # relative: the data folder can move


def test_cancelled_run_leaves_nothing(store: ExperimentStore) -> None:
    with pytest.raises(Cancelled), store.staging() as staging:
        (staging / "partial.bin").write_bytes(b"half written")
        raise Cancelled("cancelled by the user")
    assert not staging.exists()
    assert store.count() == 0
    assert list(store.staging_root.iterdir()) == []
    assert list(store.experiments_root.iterdir()) == []


def test_failed_add_rolls_back(store: ExperimentStore, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="artifacts folder"):
        store.add(make_record(), staging_dir=tmp_path / "missing")
    with pytest.raises(StoreError, match="needs 'method'"):
        store.add({"model": "m"})
    assert store.count() == 0


def test_delete_removes_row_and_artifacts(store: ExperimentStore) -> None:
    ids = []
    for acc in (0.9, 0.8):
        with store.staging() as staging:
            (staging / "weights.npz").write_bytes(b"npz")
            ids.append(store.add(make_record(accuracy=acc), staging_dir=staging))
    assert store.experiment_dir(ids[0]).is_dir()
    assert store.delete([ids[0]]) == 1
    assert not store.experiment_dir(ids[0]).exists()
    assert [r["id"] for r in store.list()] == [ids[1]]
    with pytest.raises(StoreError, match="does not exist"):
        store.get(ids[0])
    assert store.version() == (1, ids[1])


def test_open_removes_orphans_and_stale_staging(tmp_path: Path) -> None:
    store = ExperimentStore(tmp_path)
    orphan = store.experiments_root / "000099"
    orphan.mkdir()
    stale = store.staging_root / "run_dead"
    stale.mkdir()
    fresh = store.staging_root / "run_live"
    fresh.mkdir()
    old = time.time() - 7 * 3600
    os.utime(orphan, (old, old))
    os.utime(stale, (old, old))
    ExperimentStore(tmp_path)
    assert not orphan.exists()
    assert not stale.exists()
    assert fresh.exists()  # may belong to a run in progress in another process


def test_home_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path / "elsewhere"))
    assert default_home() == tmp_path / "elsewhere"
    store = ExperimentStore()
    assert store.db_path == tmp_path / "elsewhere" / "experiments.sqlite"
    assert store.db_path.is_file()


def test_unusable_home_gives_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="COMPRESSION_STUDIO_HOME"):
        ExperimentStore(blocker / "home")


def test_weights_and_downloads(store: ExperimentStore) -> None:
    with store.staging() as staging:
        np.savez(staging / "weights.npz", **{"fc/original": np.arange(5.0), "fc/compressed": np.ones(5)})
        package = staging / "model.mlpackage"
        (package / "Data").mkdir(parents=True)
        (package / "Data" / "weights.bin").write_bytes(b"\x01" * 100)
        (package / "Manifest.json").write_text("{}")
        record = make_record()
        record["weights_path"] = str(staging / "weights.npz")
        record["artifact_path"] = str(package)
        experiment_id = store.add(record, staging_dir=staging)

    weights = store.weights(experiment_id)
    np.testing.assert_array_equal(weights["fc/original"], np.arange(5.0))
    data, name, mime = store.artifact_download(experiment_id)
    assert name.endswith(".mlpackage.zip") and mime == "application/zip"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert sorted(zf.namelist()) == ["model.mlpackage/Data/weights.bin", "model.mlpackage/Manifest.json"]
        assert zf.read("model.mlpackage/Data/weights.bin") == b"\x01" * 100

    csv_text = store.csv_text()
    header, row = csv_text.strip().splitlines()[:2]
    assert "accuracy_top1" in header and "spec_json" in header
    assert row.startswith(f"{experiment_id},")


def test_artifact_download_without_file(store: ExperimentStore) -> None:
    experiment_id = store.add(make_record())
    with pytest.raises(StoreError, match="no exported model"):
        store.artifact_download(experiment_id)
    assert store.weights(experiment_id) == {}
