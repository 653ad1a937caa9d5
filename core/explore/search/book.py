"""The search book: table ``explore_searches`` of the store's SQLite file keeps what each search was asked, the
runs it queued and, at its end, its winner and notes.

Where a running search stands (queued, running, its progress, a cancel request, a dead worker) is its job's row
in the queue (kind ``budget_search``, core.explore.search.job): ``SearchBook.get`` reads both, so a page, a
reload or another session follows a search the same way it follows any job.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.explore.books import StoreBook
from core.explore.search.goal import OBJECTIVES, SearchError, SearchGoal, goal_to_dict
from core.jobs.queue import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Job, JobError
from core.jobs.refs import DataRef, ModelRef
from core.progress import Cancelled

SEARCH_STATES = ("starting", "running", "done", "failed", "cancelled")
SEARCH_FINISHED = ("done", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS explore_searches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    model_ref TEXT NOT NULL,
    data_ref TEXT NOT NULL,
    goal TEXT NOT NULL,
    options TEXT NOT NULL,
    configs TEXT NOT NULL,
    state TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    updated_at REAL,
    finished_at REAL,
    winner_id INTEGER,
    sentence TEXT,
    ran TEXT NOT NULL DEFAULT '[]',
    failed TEXT NOT NULL DEFAULT '[]',
    notes TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    job_id INTEGER
);
CREATE TABLE IF NOT EXISTS explore_search_jobs (
    search_id INTEGER NOT NULL,
    job_id INTEGER NOT NULL,
    PRIMARY KEY (search_id, job_id)
);
"""
_FIELDS = ("state", "message", "updated_at", "finished_at", "winner_id", "sentence", "ran", "failed", "notes",
           "error", "job_id")
_COLUMNS = ("id, created_at, model_ref, data_ref, goal, options, configs, state, message, updated_at, finished_at,"
            " winner_id, sentence, ran, failed, notes, error, job_id")


class SearchCancelled(Cancelled):
    """The user asked the search to stop; its unfinished runs are cancelled."""


@dataclass(frozen=True)
class SearchRun:
    """One stored search: what it was asked, where it stands (from its job), and (when done) its winner."""

    id: int
    created_at: float
    model_ref: ModelRef
    data_ref: DataRef
    goal: SearchGoal
    options: dict
    configs: tuple[dict, ...]
    state: str
    progress: float
    message: str
    updated_at: float | None
    finished_at: float | None
    pid: int | None  # the worker process running the search's job
    host: str | None
    cancel_requested: bool
    winner_id: int | None
    sentence: str | None
    ran: tuple[int, ...]
    failed: tuple[str, ...]
    notes: tuple[str, ...]
    error: str | None
    job_ids: tuple[int, ...]  # the runs it queued
    job_id: int | None = None  # its own job (None: run in the foreground by the command line)

    @property
    def finished(self) -> bool:
        return self.state in SEARCH_FINISHED

    @property
    def origin(self) -> dict:
        """core.jobs.origins: every run of this search hangs under 'search #N' in the lineage map."""
        verb = OBJECTIVES[self.goal.objective][1]
        return {"kind": "search", "id": self.id, "parent_experiment_id": None,
                "label": f"search #{self.id}: {verb} within {self.goal.max_drop_pts:g} pts"}


def _live_fields(row: dict, job: Job | None) -> dict:
    """State, progress, message and error of a search: its job's while it runs; the book's result once the search
    wrote it; the job's end when the search could not write it (its worker died, it was cancelled while queued)."""
    live = {"progress": 1.0 if row["state"] == "done" else 0.0, "pid": None, "host": None, "cancel_requested": False}
    if job is None:
        return live
    live.update(pid=job.worker_pid, host=job.worker_host, cancel_requested=job.cancel_requested)
    if job.state in (QUEUED, RUNNING):
        state = "starting" if job.state == QUEUED else "running"
        return {**live, "state": state, "progress": job.progress, "message": job.message}
    if row["state"] in SEARCH_FINISHED:
        return live
    ended = {DONE: "done", FAILED: "failed", CANCELLED: "cancelled"}[job.state]
    message = "Failed" if job.state == FAILED else (job.message or "Cancelled")
    return {**live, "state": ended, "message": message, "error": job.error, "finished_at": job.finished_at}


class SearchBook(StoreBook):
    """Searches of the data folder `home`, in the store's SQLite file next to the job queue and the sweeps."""

    SCHEMA = _SCHEMA

    def __init__(self, *, home: Any = None) -> None:
        super().__init__(home=home)
        with self._connection() as conn, contextlib.suppress(sqlite3.OperationalError):  # present already
            conn.execute("ALTER TABLE explore_searches ADD COLUMN job_id INTEGER")  # a data folder made before

    def create(self, *, model: ModelRef, data: DataRef, goal: SearchGoal, options: dict,
               configs: Sequence[dict] | None, state: str = "starting") -> int:
        with self._connection() as conn:
            cursor = conn.execute(
                "INSERT INTO explore_searches (created_at, model_ref, data_ref, goal, options, configs, state,"
                " updated_at, message) VALUES (?,?,?,?,?,?,?,?,?)",
                (time.time(), json.dumps(model.to_dict()), json.dumps(data.to_dict()), json.dumps(goal_to_dict(goal)),
                 json.dumps(options), json.dumps(list(configs) if configs is not None else None), state, time.time(),
                 "Waiting for a worker"),
            )
            return int(cursor.lastrowid)

    def update(self, *, search_id: int, **fields: Any) -> None:
        unknown = sorted(set(fields) - set(_FIELDS))
        if unknown:
            raise SearchError(f"search book: unknown field(s) {', '.join(unknown)}.")
        values = [json.dumps(list(v)) if k in ("ran", "failed", "notes") else v for k, v in fields.items()]
        assignments = ", ".join(f"{k}=?" for k in fields)
        with self._connection() as conn:
            conn.execute(f"UPDATE explore_searches SET {assignments} WHERE id=?", [*values, int(search_id)])

    def add_jobs(self, *, search_id: int, job_ids: Sequence[int]) -> None:
        with self._connection() as conn:
            conn.executemany("INSERT OR IGNORE INTO explore_search_jobs (search_id, job_id) VALUES (?,?)",
                             [(int(search_id), int(j)) for j in job_ids])

    def get(self, *, search_id: int) -> SearchRun:
        with self._connection() as conn:
            found = conn.execute(f"SELECT {_COLUMNS} FROM explore_searches WHERE id=?", (int(search_id),)).fetchone()
            if found is None:
                raise SearchError(f"search #{search_id} does not exist.")
            jobs = [int(r[0]) for r in conn.execute(
                "SELECT job_id FROM explore_search_jobs WHERE search_id=? ORDER BY job_id", (int(search_id),))]
        row = dict(zip([c.strip() for c in _COLUMNS.split(",")], found, strict=True))
        job = self._job(row["job_id"])
        configs = json.loads(row["configs"])
        values = {
            "id": int(row["id"]), "created_at": float(row["created_at"]),
            "model_ref": ModelRef.from_dict(json.loads(row["model_ref"])),
            "data_ref": DataRef.from_dict(json.loads(row["data_ref"])), "goal": SearchGoal(**json.loads(row["goal"])),
            "options": json.loads(row["options"]), "configs": tuple(configs) if configs is not None else (),
            "state": row["state"], "message": row["message"] or "", "updated_at": row["updated_at"],
            "finished_at": row["finished_at"], "winner_id": row["winner_id"], "sentence": row["sentence"],
            "ran": tuple(json.loads(row["ran"])), "failed": tuple(json.loads(row["failed"])),
            "notes": tuple(json.loads(row["notes"])), "error": row["error"], "job_ids": tuple(jobs),
            "job_id": row["job_id"],
        }
        return SearchRun(**{**values, **_live_fields(row, job)})

    def _job(self, job_id: int | None) -> Job | None:
        if job_id is None:
            return None
        try:
            return self.queue.get(job_id=int(job_id))
        except JobError:  # the queue row was deleted: the book's own record is all there is
            return None

    def list(self, *, model: str | None = None, limit: int = 20) -> list[SearchRun]:
        """Searches, newest first (of one model source id when given)."""
        with self._connection() as conn:
            ids = [int(r[0]) for r in conn.execute("SELECT id FROM explore_searches ORDER BY id DESC")]
        runs = [self.get(search_id=i) for i in ids]
        return [r for r in runs if model is None or r.model_ref.source_id == model][:limit]

    def latest(self, *, model: str) -> SearchRun | None:
        runs = self.list(model=model, limit=1)
        return runs[0] if runs else None

    def request_cancel(self, *, search_id: int) -> None:
        """Cancel the search's job (it cancels its unfinished runs at its next progress step); its queued runs stop
        now."""
        run = self.get(search_id=search_id)
        if run.job_id is not None:
            self.queue.cancel(job_id=run.job_id)
        elif not run.finished:  # run in the foreground by a command line (or left by an older version): no job to ask
            self.update(search_id=search_id, state="cancelled", finished_at=time.time(),
                        message="Cancelled; its unfinished runs were cancelled")
        self.cancel_jobs(search_id=search_id)

    def cancel_jobs(self, *, search_id: int) -> int:
        with self._connection() as conn:
            jobs = [int(r[0]) for r in conn.execute("SELECT job_id FROM explore_search_jobs WHERE search_id=?",
                                                    (int(search_id),))]
        stopped = 0
        for job_id in jobs:
            if self.queue.get(job_id=job_id).state in (QUEUED, RUNNING):
                self.queue.cancel(job_id=job_id)
                stopped += 1
        return stopped
