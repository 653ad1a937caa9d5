"""Every data folder derives from one home setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import paths
from core.experiment_options import ExperimentOptions
from core.store import ExperimentStore


def test_home_defaults_to_studio_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(paths.HOME_ENV, raising=False)
    assert paths.studio_home() == paths.PROJECT_ROOT / "studio_data"


def test_everything_follows_the_home_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path / "home"))
    assert paths.studio_home() == tmp_path / "home"
    assert paths.cache_dir() == tmp_path / "home" / "cache"
    assert paths.cli_runs_dir() == tmp_path / "home" / "cli_runs"
    assert ExperimentOptions().cache_root() == tmp_path / "home" / "cache"
    assert ExperimentStore().home == tmp_path / "home"
    assert paths.cache_dir(tmp_path / "other") == tmp_path / "other" / "cache"
