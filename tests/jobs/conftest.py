"""Shared helpers of the job-runner tests: a fresh data folder, a private timing lock, polling."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from core.jobs import DataRef, ModelRef

FAST_OPTIONS = {"eval_limit": 100, "measure_latency": False, "measure_memory": False, "export": False}
CNN = ModelRef(kind="sample", name="fashion_cnn")
BUNDLED = DataRef(kind="bundled")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data folder, and a timing lock private to the test (other test runs on the machine don't block it)."""
    folder = tmp_path / "studio"
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(folder))
    monkeypatch.setenv("COMPRESSION_STUDIO_TIMING_LOCK", str(tmp_path / "timing.lock"))
    monkeypatch.setenv("COMPRESSION_STUDIO_WORKER_IDLE", "20")
    return folder


def wait_until(predicate: Callable[[], object], *, timeout: float, poll: float = 0.05, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
