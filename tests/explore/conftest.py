"""Shared fixtures of the Explore tests: a fresh data folder with a private timing lock."""

from __future__ import annotations

from pathlib import Path

import pytest

FAST_OPTIONS = {"eval_limit": 100, "measure_latency": False, "measure_memory": False, "export": False}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "studio"
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(folder))
    monkeypatch.setenv("COMPRESSION_STUDIO_TIMING_LOCK", str(tmp_path / "timing.lock"))
    monkeypatch.setenv("COMPRESSION_STUDIO_WORKER_IDLE", "20")
    return folder


@pytest.fixture(scope="session")
def fashion_cnn():
    from core.models.sources import load_model

    return load_model("sample:fashion_cnn")
