"""Where a job (and the experiment it saves) came from: its lineage, kept beside the queue.

An origin is a small JSON dict: ``{"kind": "manual" | "sweep" | "sensitivity" | "recipe" | "search",
"id": <the sweep / sensitivity / recipe / search id or None>, "parent_experiment_id": <int or None>,
"label": <short text or None>}``. ``JobQueue.submit(origin=…)`` writes it in the submitting transaction (table
``job_origins``), and the runner copies it into the experiment record's ``origin`` field. A job submitted without
one is a manual run.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

ORIGIN_KINDS = ("manual", "sweep", "sensitivity", "recipe", "search")
ORIGIN_KEYS = ("kind", "id", "parent_experiment_id", "label")
MANUAL = {"kind": "manual", "id": None, "parent_experiment_id": None, "label": None}

_SCHEMA = "CREATE TABLE IF NOT EXISTS job_origins (job_id INTEGER PRIMARY KEY, origin TEXT NOT NULL)"


class OriginError(ValueError):
    """An origin dict is malformed; the message names the key."""


def check_origin(origin: dict | None) -> dict:
    """The origin with every key present (None → manual); unknown keys or kinds raise OriginError."""
    if origin is None:
        return dict(MANUAL)
    if not isinstance(origin, dict):
        raise OriginError(f"origin must be a dict; got {type(origin).__name__}.")
    unknown = sorted(set(origin) - set(ORIGIN_KEYS))
    if unknown:
        raise OriginError(f"origin: unknown key(s) {', '.join(unknown)}; known: {', '.join(ORIGIN_KEYS)}.")
    kind = origin.get("kind")
    if kind not in ORIGIN_KINDS:
        raise OriginError(f"origin.kind must be one of {', '.join(ORIGIN_KINDS)}; got {kind!r}.")
    parent = origin.get("parent_experiment_id")
    if parent is not None and (isinstance(parent, bool) or not isinstance(parent, int)):
        raise OriginError(f"origin.parent_experiment_id must be an experiment id (int) or None; got {parent!r}.")
    identifier = origin.get("id")
    if identifier is not None and not isinstance(identifier, int | str):
        raise OriginError(f"origin.id must be an int or a string; got {type(identifier).__name__}.")
    return {key: origin.get(key) for key in ORIGIN_KEYS}


def write_origin(conn: sqlite3.Connection, *, job_id: int, origin: dict) -> None:
    """Store a job's origin on an open connection (inside the submit transaction)."""
    conn.execute(_SCHEMA)
    conn.execute("INSERT OR REPLACE INTO job_origins (job_id, origin) VALUES (?, ?)",
                 (int(job_id), json.dumps(check_origin(origin))))


def read_origin(*, db_path: Path, job_id: int) -> dict:
    """The origin of job `job_id` (manual when none was given)."""
    conn = sqlite3.connect(db_path, timeout=30)
    try:
        conn.execute(_SCHEMA)
        row = conn.execute("SELECT origin FROM job_origins WHERE job_id=?", (int(job_id),)).fetchone()
    finally:
        conn.close()
    return check_origin(json.loads(row[0])) if row else dict(MANUAL)


def read_origins(*, db_path: Path, job_ids: list[int]) -> dict[int, dict]:
    """Origins of many jobs at once (jobs without one are left out)."""
    if not job_ids:
        return {}
    conn = sqlite3.connect(db_path, timeout=30)
    try:
        conn.execute(_SCHEMA)
        marks = ",".join("?" * len(job_ids))
        rows = conn.execute(f"SELECT job_id, origin FROM job_origins WHERE job_id IN ({marks})",
                            [int(i) for i in job_ids]).fetchall()
    finally:
        conn.close()
    return {int(job_id): json.loads(text) for job_id, text in rows}
