"""Every folder the studio writes to derives from one home setting.

``$COMPRESSION_STUDIO_HOME`` if set, else ``studio_data/`` in the project. Nothing else in the code base
spells out a data-folder path.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HOME_ENV = "COMPRESSION_STUDIO_HOME"


def studio_home() -> Path:
    """The data folder: ``$COMPRESSION_STUDIO_HOME`` if set, else ``studio_data/`` in the project."""
    env = os.environ.get(HOME_ENV)
    return Path(env).expanduser() if env else PROJECT_ROOT / "studio_data"


def cache_dir(home: Path | None = None) -> Path:
    """Baseline logits, fp16 baseline packages and other recomputable results."""
    return (home or studio_home()) / "cache"


def cli_runs_dir(home: Path | None = None) -> Path:
    """Artifacts of CLI runs that were not saved to the store (``--no-save``)."""
    return (home or studio_home()) / "cli_runs"


def experiments_dir(home: Path | None = None) -> Path:
    """One artifacts folder per saved experiment (core.store)."""
    return (home or studio_home()) / "experiments"


def staging_dir(home: Path | None = None) -> Path:
    """Staging folders of runs in progress and zips being unpacked; removed when done (stale ones on store open)."""
    return (home or studio_home()) / "tmp"


def uploads_dir(home: Path | None = None) -> Path:
    """Files uploaded in the dashboard, one sub-folder per browser session."""
    return (home or studio_home()) / "uploads"


def job_logs_dir(home: Path | None = None) -> Path:
    """Worker logs of the job queue (core.jobs)."""
    return (home or studio_home()) / "jobs"
