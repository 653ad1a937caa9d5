"""Experiment store: a SQLite database of experiment records plus one artifacts folder per experiment.

Layout under the data folder (``$COMPRESSION_STUDIO_HOME`` or ``./studio_data``)::

    experiments.sqlite          one row per experiment: indexed columns for listing + the full record as JSON
    experiments/000042/         artifacts of experiment 42 (.mlpackage or TorchScript, weights.npz, …)
    tmp/<random>/               staging folders of runs in progress
    uploads/<session>/          files uploaded by one browser session

Saving is atomic: a run writes its artifacts into a staging folder; ``add`` inserts the row inside a
transaction, renames the staging folder to its final name and only then commits. A run that crashes or is
cancelled leaves no row, and ``open`` removes staging folders and orphaned artifact folders left by a crash.
Paths inside a stored record are kept relative to the experiment folder, so the data folder can be moved.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sqlite3
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from core.disk import Cleanup, PartUsage, disk_usage, enforce_caps, free_disk_space
from core.formatting import as_number
from core.jsonable import to_jsonable
from core.paths import HOME_ENV, experiments_dir, staging_dir, studio_home, uploads_dir
from core.tables import (  # noqa: F401  (the tabular views used to live here; kept importable from core.store)
    DIFF_METRICS,
    TABLE_COLUMNS,
    diff_frame,
    experiments_csv,
    experiments_frame,
    layers_frame,
    per_class_frame,
)

DB_NAME = "experiments.sqlite"
_STALE_STAGING_SECONDS = 6 * 3600  # a staging folder this old belongs to a run that died
_ORPHAN_GRACE_SECONDS = 120  # an unreferenced artifact folder younger than this may be mid-commit elsewhere

_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    model TEXT NOT NULL,
    model_label TEXT,
    method TEXT NOT NULL,
    workflow TEXT,
    spec_summary TEXT,
    dataset TEXT,
    accuracy_top1 REAL,
    size_bytes INTEGER,
    latency_ratio REAL,
    folder TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS experiments_model ON experiments(model);
CREATE INDEX IF NOT EXISTS experiments_method ON experiments(method);
CREATE INDEX IF NOT EXISTS experiments_created ON experiments(created_at);
"""


class StoreError(ValueError):
    """The experiment store cannot do what was asked; the message says why and what to do."""


default_home = studio_home  # the data folder (core.paths); kept under its old name for callers of the store


class ExperimentStore:
    """SQLite experiment records + artifact folders. Safe to share between threads (one connection per call)."""

    def __init__(self, home: Path | str | None = None) -> None:
        self.home = Path(home).expanduser() if home is not None else studio_home()
        try:
            for folder in (self.home, self.experiments_root, self.staging_root, self.uploads_root):
                folder.mkdir(parents=True, exist_ok=True)
            with self._connect() as conn:
                conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"cannot use {self.home} as the data folder ({exc}). Set {HOME_ENV} to a writable folder."
            ) from None
        self._cleanup()

    # ---- locations
    @property
    def db_path(self) -> Path:
        return self.home / DB_NAME

    @property
    def experiments_root(self) -> Path:
        return experiments_dir(self.home)

    @property
    def staging_root(self) -> Path:
        return staging_dir(self.home)

    @property
    def uploads_root(self) -> Path:
        return uploads_dir(self.home)

    def experiment_dir(self, experiment_id: int) -> Path:
        return self.experiments_root / f"{int(experiment_id):06d}"

    def uploads_dir(self, session_id: str) -> Path:
        """A private folder for one browser session's uploads."""
        safe = "".join(ch for ch in session_id if ch.isalnum() or ch in "-_")[:64] or "anonymous"
        folder = self.uploads_root / safe
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    # ---- writing
    @contextlib.contextmanager
    def staging(self, *, prefix: str = "run_") -> Iterator[Path]:
        """A fresh folder for a run's artifacts; removed if the block raises (crash, cancel) or never saves.

        `prefix` names it (a job runner names it after its job, so a reaper can find what a killed worker left).
        """
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir=self.staging_root))
        try:
            yield folder
        finally:
            # After a successful `add` the folder was renamed away; otherwise nothing of the run survives.
            shutil.rmtree(folder, ignore_errors=True)

    def add(self, record: dict, *, staging_dir: Path | None = None) -> int:
        """Save one experiment record (and move its staging folder into place); returns the new id."""
        for key in ("model", "method"):
            if not record.get(key):
                raise StoreError(f"an experiment record needs '{key}'; this one has none.")
        staging_dir = Path(staging_dir) if staging_dir is not None else None
        if staging_dir is not None and not staging_dir.is_dir():
            raise StoreError(f"the run's artifacts folder {staging_dir} is missing; run the experiment again.")
        stored = to_jsonable(_relative_paths(dict(record), staging_dir))  # NaN/inf → null (the UI shows "n/a")
        stored.pop("id", None)
        try:
            record_json = json.dumps(stored, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"the experiment record cannot be saved as JSON ({exc}).") from None
        created_at = str(stored.get("created_at") or time.strftime("%Y-%m-%dT%H:%M:%S"))
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            cursor = conn.execute(
                "INSERT INTO experiments (created_at, model, model_label, method, workflow, spec_summary, dataset,"
                " accuracy_top1, size_bytes, latency_ratio, folder, record) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    created_at,
                    str(stored["model"]),
                    stored.get("model_label"),
                    str(stored["method"]),
                    stored.get("workflow"),
                    stored.get("spec_summary"),
                    stored.get("dataset"),
                    as_number(stored.get("accuracy_top1")),
                    int(stored["size_bytes"]) if isinstance(stored.get("size_bytes"), int | float) else None,
                    as_number(stored.get("latency_ratio")),
                    "",
                    record_json,
                ),
            )
            experiment_id = int(cursor.lastrowid)
            target = self.experiment_dir(experiment_id)
            if target.exists():  # left by a crash between rename and commit of an earlier run
                shutil.rmtree(target)
            if staging_dir is not None:
                staging_dir.rename(target)
            else:
                target.mkdir(parents=True)
            conn.execute("UPDATE experiments SET folder=? WHERE id=?", (target.name, experiment_id))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()
        return experiment_id

    def delete(self, experiment_ids: Sequence[int]) -> int:
        """Remove experiments and their artifacts; returns how many rows were deleted."""
        ids = [int(i) for i in experiment_ids]
        if not ids:
            return 0
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            marks = ",".join("?" * len(ids))
            deleted = conn.execute(f"DELETE FROM experiments WHERE id IN ({marks})", ids).rowcount
            conn.execute("COMMIT")
        finally:
            conn.close()
        for experiment_id in ids:
            shutil.rmtree(self.experiment_dir(experiment_id), ignore_errors=True)
        return int(deleted)

    # ---- reading
    def count(self, *, model: str | None = None) -> int:
        with contextlib.closing(self._connect()) as conn:
            if model is None:
                return int(conn.execute("SELECT COUNT(*) FROM experiments").fetchone()[0])
            return int(conn.execute("SELECT COUNT(*) FROM experiments WHERE model=?", (model,)).fetchone()[0])

    def version(self) -> tuple[int, int]:
        """Changes whenever an experiment is added or deleted: a cheap cache key for the pages."""
        with contextlib.closing(self._connect()) as conn:
            row = conn.execute("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM experiments").fetchone()
        return int(row[0]), int(row[1])

    def models(self) -> list[dict]:
        """Models that have experiments: id, label, count — newest first."""
        with contextlib.closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT model, MAX(model_label), COUNT(*), MAX(created_at) FROM experiments GROUP BY model"
                " ORDER BY MAX(id) DESC"
            ).fetchall()
        return [{"model": m, "model_label": label or m, "count": int(n), "last": last} for m, label, n, last in rows]

    def list(self, *, model: str | None = None, method: str | None = None) -> list[dict]:
        """Full records (with their ``id`` and absolute paths), oldest first."""
        query = "SELECT id, folder, record FROM experiments"
        clauses, params = [], []
        if model is not None:
            clauses.append("model=?")
            params.append(model)
        if method is not None:
            clauses.append("method=?")
            params.append(method)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        query += " ORDER BY id"
        with contextlib.closing(self._connect()) as conn:
            rows = conn.execute(query, params).fetchall()
        return [self._hydrate(i, folder, text) for i, folder, text in rows]

    def get(self, experiment_id: int) -> dict:
        with contextlib.closing(self._connect()) as conn:
            row = conn.execute(
                "SELECT id, folder, record FROM experiments WHERE id=?", (int(experiment_id),)
            ).fetchone()
        if row is None:
            raise StoreError(f"experiment #{experiment_id} does not exist (it may have been deleted).")
        return self._hydrate(*row)

    def _hydrate(self, experiment_id: int, folder: str, text: str) -> dict:
        record = json.loads(text)
        record["id"] = int(experiment_id)
        base = self.experiments_root / (folder or f"{int(experiment_id):06d}")
        for key, value in list(record.items()):
            if key.endswith("_path") and isinstance(value, str) and value and not Path(value).is_absolute():
                record[key] = str(base / value)
        record["experiment_dir"] = str(base)
        return record

    # ---- side files and downloads
    def weights(self, experiment_id: int) -> dict[str, np.ndarray]:
        """The weight arrays saved for histograms (``weights.npz``), read without pickle; {} if there are none."""
        record = self.get(experiment_id)
        path = Path(record.get("weights_path") or self.experiment_dir(experiment_id) / "weights.npz")
        if not path.is_file():
            return {}
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {name: npz[name] for name in npz.files}
        except (OSError, ValueError) as exc:
            raise StoreError(f"the weights file of experiment #{experiment_id} cannot be read ({exc}).") from None

    def artifact_file(self, experiment_id: int) -> tuple[Path, str, str]:
        """(path on disk, download file name, MIME type) of the compressed model, without reading it."""
        record = self.get(experiment_id)
        path = Path(record.get("artifact_path") or "")
        if not record.get("artifact_path") or not path.exists():
            raise StoreError(f"experiment #{experiment_id} has no exported model file on disk.")
        stem = f"experiment{experiment_id}_{path.name}"
        if path.is_dir():
            return path, f"{stem}.zip", "application/zip"
        return path, stem, "application/octet-stream"

    def artifact_download(self, experiment_id: int) -> tuple[bytes, str, str]:
        """(bytes, file name, MIME type) of the compressed model: a zipped .mlpackage or the TorchScript file."""
        path, name, mime = self.artifact_file(experiment_id)
        return (zip_directory(path) if path.is_dir() else path.read_bytes()), name, mime

    def csv_text(self, experiment_ids: Sequence[int] | None = None) -> str:
        """The experiments table as CSV (all experiments, or the given ids)."""
        records = self.list()
        if experiment_ids is not None:
            wanted = {int(i) for i in experiment_ids}
            records = [r for r in records if r["id"] in wanted]
        return experiments_csv(records)

    # ---- housekeeping
    def _cleanup(self) -> None:
        now = time.time()
        for folder in self.staging_root.iterdir():
            with contextlib.suppress(OSError):
                if now - folder.stat().st_mtime > _STALE_STAGING_SECONDS:
                    shutil.rmtree(folder, ignore_errors=True)
        with contextlib.closing(self._connect()) as conn:
            known = {row[0] for row in conn.execute("SELECT folder FROM experiments")}
        for folder in self.experiments_root.iterdir():
            with contextlib.suppress(OSError):
                if folder.name not in known and now - folder.stat().st_mtime > _ORPHAN_GRACE_SECONDS:
                    shutil.rmtree(folder, ignore_errors=True)
        # Caches, uploads and CLI run folders stay under their size caps (least recently used go first).
        with contextlib.suppress(OSError, ValueError):
            enforce_caps(home=self.home)

    def disk_usage(self) -> list[PartUsage]:
        """Bytes used by each part of this data folder (core.disk)."""
        return disk_usage(home=self.home)

    def free_disk_space(self, *, keep: Sequence[Path] = ()) -> Cleanup:
        """Empty caches, uploads (except `keep`), CLI run folders and stale staging folders; experiments stay."""
        return free_disk_space(home=self.home, keep=keep)


def zip_directory(path: Path) -> bytes:
    """A folder (e.g. an .mlpackage) as zip bytes, with the folder itself as the top entry."""
    path = Path(path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            zf.write(file, Path(path.name) / file.relative_to(path))
    return buffer.getvalue()


def _relative_paths(record: dict, staging_dir: Path | None) -> dict:
    """Paths into the staging folder become relative to the (future) experiment folder."""
    if staging_dir is None:
        return record
    root = staging_dir.resolve()
    for key, value in list(record.items()):
        if key.endswith("_path") and isinstance(value, str | Path) and str(value):
            path = Path(value).resolve()
            if path.is_relative_to(root):
                record[key] = str(path.relative_to(root))
    return record
