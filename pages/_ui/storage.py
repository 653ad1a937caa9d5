"""The experiment store as pages see it: one cached store per data folder, cached record lists, uploads."""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from core.disk import enforce_caps, touch
from core.formatting import fmt_bytes
from core.paths import studio_home
from core.store import ExperimentStore


@dataclass(frozen=True)
class StoredUpload:
    """A file already on disk in this session's uploads folder (what a streamed upload field returns)."""

    name: str
    path: Path
    digest: str
    size: int


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


UPLOAD_CHUNK = 1 << 20


def save_upload(uploaded: Any) -> tuple[Path, str]:
    """Stream an uploaded file into this session's private folder in 1 MB chunks; returns (path, content hash).

    Never copies the whole upload into one bytes object. Afterwards the uploads of all sessions are brought
    back under their size cap (core.disk: least recently used sessions first; this session's folder stays).
    """
    if isinstance(uploaded, StoredUpload):  # streamed to disk by core.uploads: already in place and hashed
        return uploaded.path, uploaded.digest
    saved = st.session_state.setdefault("saved_uploads", {})  # the page saves on every rerun: hash each file once
    file_id = getattr(uploaded, "file_id", None)
    if file_id in saved and Path(saved[file_id][0]).is_file():
        touch(Path(saved[file_id][0]))
        return Path(saved[file_id][0]), saved[file_id][1]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(uploaded.name).name)[-120:].lstrip(".") or "upload"
    s = store()
    folder = s.uploads_dir(st.session_state["session_id"])
    tmp = folder / f".{uuid.uuid4().hex}.part"
    digest = hashlib.sha256()
    uploaded.seek(0)
    try:
        with open(tmp, "wb") as out:
            while chunk := uploaded.read(UPLOAD_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        short = digest.hexdigest()[:16]
        path = folder / short / name  # the user's own file name, so messages name the file they chose
        if path.exists():
            touch(path)
        else:
            path.parent.mkdir(exist_ok=True)
            tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
        uploaded.seek(0)
    enforce_caps(home=s.home, parts=["uploads"], keep=[folder])
    if file_id is not None:
        saved[file_id] = (str(path), short)
    return path, short


def disk_space_panel(*, key: str) -> None:
    """How much each part of the data folder uses, and a button that empties the recomputable parts."""
    import pandas as pd

    from core.disk import cleanup_message, usage_rows

    s = store()
    rows = usage_rows(s.disk_usage())
    total = sum(r["bytes"] for r in rows)
    st.caption(f"Data folder `{s.home}`: {fmt_bytes(total)} in all. Caches, uploads and CLI run folders are kept "
               "under their caps automatically (least recently used first); saved experiments are never removed here.")
    st.dataframe(pd.DataFrame(rows).drop(columns=["bytes"]), hide_index=True, key=f"{key}.table")
    if st.button("Free disk space", icon=":material/delete_sweep:", key=f"{key}.free",
                 help="Empties caches, other sessions' uploads and CLI run folders; keeps saved experiments, this "
                 "session's uploads and anything used in the last 10 minutes."):
        keep = [s.uploads_dir(st.session_state["session_id"])]
        st.session_state[f"{key}.message"] = cleanup_message(s.free_disk_space(keep=keep))
        st.rerun()
    if message := st.session_state.get(f"{key}.message"):
        st.success(message, icon=":material/check_circle:")
