"""The experiment store as pages see it: one cached store per data folder, cached record lists, uploads."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import streamlit as st

from core.paths import studio_home
from core.store import ExperimentStore


@st.cache_resource(show_spinner=False)
def _store(home: str) -> ExperimentStore:
    return ExperimentStore(Path(home))


def store() -> ExperimentStore:
    return _store(str(studio_home()))


@st.cache_data(show_spinner=False, max_entries=16)
def _records(home: str, version: tuple[int, int], model: str | None) -> list[dict]:
    del version  # cache key: a new or deleted experiment invalidates
    return _store(home).list(model=model)


def records(*, model: str | None = None) -> list[dict]:
    """Experiment records from the store, cached until an experiment is added or deleted."""
    s = store()
    return _records(str(s.home), s.version(), model)


def experiment_count() -> int:
    try:
        return store().count()
    except Exception:  # the sidebar must render even if the store is broken
        return 0


def save_upload(uploaded: Any) -> tuple[Path, str]:
    """Write an uploaded file into this session's private folder; returns (path, content hash)."""
    data = uploaded.getvalue()
    digest = hashlib.sha256(data).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(uploaded.name).name)[-120:] or "upload"
    folder = store().uploads_dir(st.session_state["session_id"])
    path = folder / f"{digest}_{name}"
    if not path.exists():
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path, digest
