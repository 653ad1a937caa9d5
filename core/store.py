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
import csv
import io
import json
import math
import os
import shutil
import sqlite3
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HOME_ENV = "COMPRESSION_STUDIO_HOME"
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


def default_home() -> Path:
    """The data folder: ``$COMPRESSION_STUDIO_HOME`` if set, else ``studio_data/`` in the project."""
    env = os.environ.get(HOME_ENV)
    return Path(env).expanduser() if env else PROJECT_ROOT / "studio_data"


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _finite(value: Any) -> Any:
    """NaN/inf are not JSON; store them as null (the UI shows "n/a")."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _as_float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


class ExperimentStore:
    """SQLite experiment records + artifact folders. Safe to share between threads (one connection per call)."""

    def __init__(self, home: Path | str | None = None) -> None:
        self.home = Path(home).expanduser() if home is not None else default_home()
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
        return self.home / "experiments"

    @property
    def staging_root(self) -> Path:
        return self.home / "tmp"

    @property
    def uploads_root(self) -> Path:
        return self.home / "uploads"

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
    def staging(self) -> Iterator[Path]:
        """A fresh folder for a run's artifacts; removed if the block raises (crash, cancel) or never saves."""
        folder = Path(tempfile.mkdtemp(prefix="run_", dir=self.staging_root))
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
        stored = _finite(_relative_paths(dict(record), staging_dir))
        stored.pop("id", None)
        try:
            record_json = json.dumps(stored, default=_json_default, allow_nan=False)
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
                    _as_float(stored.get("accuracy_top1")),
                    int(stored["size_bytes"]) if isinstance(stored.get("size_bytes"), int | float) else None,
                    _as_float(stored.get("latency_ratio")),
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


# --------------------------------------------------------------------------- tabular views

# Columns of the experiments table, in display order. Fractions stay fractions here; pages format them.
TABLE_COLUMNS = (
    "id",
    "created_at",
    "model",
    "method",
    "workflow",
    "spec_summary",
    "accuracy_top1",
    "baseline_accuracy_top1",
    "accuracy_delta_pts",
    "accuracy_top5",
    "agreement_top1",
    "output_snr_db",
    "flipped",
    "size_bytes",
    "size_fp16_bytes",
    "size_fp32_bytes",
    "compression_ratio_fp16",
    "bits_per_weight",
    "latency_ms_p50",
    "latency_ms_p90",
    "baseline_latency_ms_p50",
    "baseline_latency_ms_p90",
    "latency_ratio",
    "latency_note",
    "compress_seconds",
    "eval_images",
    "dataset",
    "accuracy_meaningful",
    "artifact_kind",
    "spec_json",
)


def experiments_frame(records: Sequence[dict]) -> pd.DataFrame:
    """One row per experiment with the numeric columns the table and the charts use."""
    rows = []
    for rec in records:
        acc, base = _as_float(rec.get("accuracy_top1")), _as_float(rec.get("baseline_accuracy_top1"))
        row = {name: rec.get(name) for name in TABLE_COLUMNS}
        row["accuracy_delta_pts"] = (acc - base) * 100 if acc is not None and base is not None else None
        row["spec_json"] = json.dumps(rec.get("spec") or {}, sort_keys=True, default=_json_default)
        row["label"] = f"#{rec.get('id', '?')} {rec.get('spec_summary') or rec.get('method')}"
        row["model_label"] = rec.get("model_label") or rec.get("model")
        breakdown = rec.get("size_breakdown") or {}
        for part, value in breakdown.items():
            if isinstance(value, int | float):
                row[f"breakdown_{part}"] = value
        rows.append(row)
    frame = pd.DataFrame(rows, columns=[*TABLE_COLUMNS, "label", "model_label"]) if not rows else pd.DataFrame(rows)
    text = ("created_at", "model", "method", "workflow", "spec_summary", "dataset", "artifact_kind", "spec_json", "label",
            "model_label", "accuracy_meaningful", "latency_note")
    numeric = [c for c in frame.columns if c not in text]
    for column in numeric:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def experiments_csv(records: Sequence[dict]) -> str:
    frame = experiments_frame(records)
    columns = [c for c in frame.columns if c != "label"]
    buffer = io.StringIO()
    frame.to_csv(buffer, columns=columns, index=False, quoting=csv.QUOTE_MINIMAL)
    return buffer.getvalue()


def per_class_frame(records: Sequence[dict]) -> pd.DataFrame:
    """Long format: experiment × class with accuracy before/after and the change in points."""
    rows = []
    for rec in records:
        names = rec.get("class_names") or []
        after = rec.get("per_class_accuracy") or []
        before = rec.get("baseline_per_class_accuracy") or []
        for i, (a, b) in enumerate(zip(after, before, strict=False)):
            a, b = _as_float(a), _as_float(b)
            rows.append(
                {
                    "id": rec.get("id"),
                    "label": f"#{rec.get('id', '?')} {rec.get('spec_summary') or rec.get('method')}",
                    "method": rec.get("method"),
                    "class_index": i,
                    "class_name": names[i] if i < len(names) else str(i),
                    "accuracy": a,
                    "baseline_accuracy": b,
                    "delta_pts": (a - b) * 100 if a is not None and b is not None else None,
                }
            )
    return pd.DataFrame(
        rows,
        columns=["id", "label", "method", "class_index", "class_name", "accuracy", "baseline_accuracy", "delta_pts"],
    )


LAYER_COLUMNS = (
    "name", "type", "shape", "params", "compressed", "reason", "method", "bits", "bits_per_weight",
    "granularity", "n_luts", "lut_entries", "n_scales", "sparsity", "snr_db",
)


def layers_frame(record: dict) -> pd.DataFrame:
    """The per-layer report of one experiment, with an effective bits-per-weight column (storage incl. overhead)."""
    rows = []
    for layer in record.get("layers") or []:
        row = {name: layer.get(name) for name in LAYER_COLUMNS}
        row["shape"] = "×".join(str(s) for s in layer.get("shape") or [])
        row["bits_per_weight"] = _layer_bits_per_weight(layer)
        row["reason"] = layer.get("reason") or ("" if layer.get("compressed") else "not compressed (no reason given)")
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(LAYER_COLUMNS))
    for column in ("params", "bits", "bits_per_weight", "n_luts", "lut_entries", "n_scales", "sparsity", "snr_db"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def _layer_bits_per_weight(layer: dict) -> float | None:
    """Stored bits per weight of one layer, including LUTs and scales (16 for an uncompressed fp16 layer)."""
    params = layer.get("params") or 0
    if not params:
        return None
    if not layer.get("compressed"):
        return 16.0
    extra = layer.get("extra") or {}
    if isinstance(extra.get("bits_per_weight"), int | float):
        return float(extra["bits_per_weight"])
    bits = layer.get("bits")
    sparsity = float(layer.get("sparsity") or 0.0)
    method = str(layer.get("method") or "")
    if bits is None:
        # Pruning only: non-zeros stay fp16 and a 1-bit mask marks them.
        return 16.0 * (1.0 - sparsity) + 1.0 if "prune" in method else None
    values = float(bits) * ((1.0 - sparsity) if "prune" in method else 1.0)
    mask = 1.0 if "prune" in method else 0.0
    lut = (layer.get("n_luts") or 0) * (layer.get("lut_entries") or 0) * (layer.get("lut_bits") or 16)
    scales = ((layer.get("n_scales") or 0) + (layer.get("n_zero_points") or 0)) * 16
    return values + mask + (lut + scales) / params


# Metrics compared side by side, with the way each is better (+1: higher is better, -1: lower is better).
DIFF_METRICS = (
    ("accuracy_top1", "top-1 accuracy", 1),
    ("accuracy_top5", "top-5 accuracy", 1),
    ("agreement_top1", "agreement with baseline", 1),
    ("output_snr_db", "output SNR (dB)", 1),
    ("flipped", "flipped predictions", -1),
    ("size_bytes", "artifact size (bytes)", -1),
    ("compression_ratio_fp16", "compression vs fp16 (×)", 1),
    ("bits_per_weight", "bits per weight", -1),
    ("latency_ms_p50", "latency p50 (ms)", -1),
    ("latency_ms_p90", "latency p90 (ms)", -1),
    ("latency_ratio", "latency vs baseline (×)", -1),
    ("peak_memory_bytes", "peak memory (bytes)", -1),
    ("compress_seconds", "time to compress (s)", -1),
)


def diff_frame(a: dict, b: dict) -> pd.DataFrame:
    """Two experiments side by side: every metric and every spec setting that differs, with B − A."""
    rows = []
    for key, label, better in DIFF_METRICS:
        va, vb = _as_float(a.get(key)), _as_float(b.get(key))
        delta = vb - va if va is not None and vb is not None else None
        verdict = ""
        if delta is not None and abs(delta) > 1e-12:
            verdict = "B better" if delta * better > 0 else "A better"
        rows.append({"what": label, "A": va, "B": vb, "B − A": delta, "": verdict})
    spec_a, spec_b = _flat_spec(a.get("spec") or {}), _flat_spec(b.get("spec") or {})
    for key in sorted(set(spec_a) | set(spec_b)):
        if spec_a.get(key) != spec_b.get(key):
            rows.append({"what": f"spec · {key}", "A": spec_a.get(key), "B": spec_b.get(key), "B − A": None, "": "differs"})
    frame = pd.DataFrame(rows, columns=["what", "A", "B", "B − A", ""])
    return frame.astype({"A": object, "B": object})


def _flat_spec(spec: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in spec.items():
        name = f"{prefix}{key}"
        if key == "steps" and isinstance(value, list):
            for i, step in enumerate(value):
                out.update(_flat_spec(step, f"step{i + 1}."))
        elif isinstance(value, dict):
            out[name] = json.dumps(value, sort_keys=True) if value else "{}"
        elif isinstance(value, list):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out
