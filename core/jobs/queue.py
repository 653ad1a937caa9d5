"""The job queue: one ``jobs`` table in the store's SQLite file, shared by every process on the data folder.

States: queued → running → done | failed | cancelled (a queued job can also be cancelled directly). A worker
claims the oldest queued job of its executor atomically (``BEGIN IMMEDIATE``), writes progress and a heartbeat
into the row while it runs, and finishes it with the experiment id or a one-line reason. Any reader reaps jobs
whose worker is gone (dead pid on this host, or no heartbeat for ``stale_after`` seconds): they are marked
failed and their staging folder is removed, so nothing of a killed run survives.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.jobs.kinds import KindError, check_kind_name
from core.jobs.origins import check_origin, write_origin
from core.jobs.refs import DataRef, ModelRef
from core.paths import studio_home

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
FINISHED_STATES = (DONE, FAILED, CANCELLED)
EXECUTORS = ("local", "ray")
# Names of some job kinds (each kind registers itself: core.jobs.kinds; the list of kind modules is
# core/job_kinds.py). The names live here so that a reader of the queue can filter by kind without importing it.
EXPERIMENT_JOB, BASELINE_JOB, MLPACKAGE_JOB = "experiment", "baseline", "mlpackage"
RECIPE_SEARCH_JOB = "recipe_search"
DEFAULT_STALE_AFTER = 15.0  # seconds without a heartbeat before a running job counts as orphaned
STORE_DB_NAME = "experiments.sqlite"  # = core.store.DB_NAME
STORE_STAGING_FOLDER = "tmp"  # = ExperimentStore.staging_root's name
JOB_STAGING_PREFIX = "job"  # staging folders of a job are tmp/job<id>_*, so a reaper can find them

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    state TEXT NOT NULL,
    executor TEXT NOT NULL DEFAULT 'local',
    label TEXT NOT NULL DEFAULT '',
    model_ref TEXT NOT NULL,
    data_ref TEXT NOT NULL,
    spec TEXT NOT NULL,
    options TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    heartbeat_at REAL,
    worker_pid INTEGER,
    worker_host TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    experiment_id INTEGER,
    phase_seconds TEXT,
    kind TEXT NOT NULL DEFAULT 'experiment',
    result TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, executor, id);
CREATE TABLE IF NOT EXISTS job_workers (
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    PRIMARY KEY (host, pid)
);
"""


class JobError(ValueError):
    """A queue operation cannot be done; the message says why."""


@dataclass(frozen=True)
class Job:
    """One row of the queue (times are UNIX seconds)."""

    id: int
    state: str
    executor: str
    label: str
    model_ref: ModelRef
    data_ref: DataRef
    spec: dict
    options: dict
    progress: float
    message: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    heartbeat_at: float | None
    worker_pid: int | None
    worker_host: str | None
    cancel_requested: bool
    error: str | None
    experiment_id: int | None
    phase_seconds: dict | None
    kind: str = EXPERIMENT_JOB
    result: dict | None = None  # what a job that saves no experiment produced (a baseline job: its record)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


_COLUMNS = (
    "id, state, executor, label, model_ref, data_ref, spec, options, progress, message, created_at, started_at,"
    " finished_at, heartbeat_at, worker_pid, worker_host, cancel_requested, error, experiment_id, phase_seconds,"
    " kind, result"
)
# Columns added after the first release: a data folder made by an older version gets them on first open.
_ADDED_COLUMNS = {"kind": "TEXT NOT NULL DEFAULT 'experiment'", "result": "TEXT"}


def _job(row: Sequence) -> Job:
    (job_id, state, executor, label, model_ref, data_ref, spec, options, progress, message, created, started,
     finished, heartbeat, pid, host, cancel, error, experiment_id, phases, kind, result) = row
    return Job(
        id=int(job_id), state=state, executor=executor, label=label or "",
        model_ref=ModelRef.from_dict(json.loads(model_ref)), data_ref=DataRef.from_dict(json.loads(data_ref)),
        spec=json.loads(spec), options=json.loads(options), progress=float(progress), message=message or "",
        created_at=float(created), started_at=started, finished_at=finished, heartbeat_at=heartbeat,
        worker_pid=pid, worker_host=host, cancel_requested=bool(cancel), error=error,
        experiment_id=experiment_id, phase_seconds=json.loads(phases) if phases else None,
        kind=kind or EXPERIMENT_JOB, result=json.loads(result) if result else None,
    )


def this_host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Is process `pid` (on this host) still running? A zombie (exited, not yet reaped) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    return True


def exit_reason(returncode: int) -> str:
    """'killed by signal 9 (SIGKILL)' / 'exited with status 1' for a worker's exit code."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-returncode} ({name})"
    return f"exited with status {returncode}"


# Exit codes of worker processes this process started and reaped (pid → code): the best reason for a dead worker.
_reaped_children: dict[int, int] = {}
# Called before each reap (with None) and for each dead-looking worker pid: the local executor collects its
# children's exit codes there (core.jobs.executors).
_exit_probes: list[Callable[[int | None], object]] = []


def add_exit_probe(probe: Callable[[int | None], object]) -> None:
    """Register a function that reaps one more kind of child process (an executor's) while a worker waits on exits."""
    _exit_probes.append(probe)


def note_child_exit(*, pid: int, returncode: int) -> None:
    """Remember how a worker this process started ended (the local executor calls this when it reaps one)."""
    _reaped_children[int(pid)] = int(returncode)


class JobQueue:
    """The queue of the data folder `home` (its store's SQLite file). Cheap to create; one connection per call."""

    def __init__(self, *, home: Path | str | None = None, stale_after: float = DEFAULT_STALE_AFTER) -> None:
        self.home = Path(home).expanduser() if home is not None else studio_home()
        # The store's own file and staging folder (ExperimentStore.db_path / .staging_root; a test checks they agree).
        # Not read from core.store: importing it costs seconds (torch), and a queue reader needs none of that.
        self.db_path = self.home / STORE_DB_NAME
        self.staging_root = self.home / STORE_STAGING_FOLDER
        self.staging_root.mkdir(parents=True, exist_ok=True)
        self.stale_after = float(stale_after)
        with self._connection() as conn:
            conn.executescript(_SCHEMA)
            present = {row[1] for row in conn.execute("PRAGMA table_info(jobs)").fetchall()}
            for name, declaration in _ADDED_COLUMNS.items():
                if name not in present:
                    with contextlib.suppress(sqlite3.OperationalError):  # another process added it just now
                        conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {declaration}")

    # ---- plumbing
    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # ---- submitting and reading
    def submit(
        self,
        *,
        model: ModelRef,
        data: DataRef,
        spec: dict,
        options: dict | None = None,
        executor: str = "local",
        label: str = "",
        origin: dict | None = None,
        kind: str = EXPERIMENT_JOB,
    ) -> int:
        """Queue one job; returns the job id. The spec is validated when the job runs (a bad one fails it).

        `origin` (core.jobs.origins: sweep / sensitivity / recipe / search id, parent experiment) goes into the
        saved record's ``origin``; None means a manual run. `kind` says what the job computes: a registered
        ``core.jobs.kinds.JobKind``.
        """
        try:
            check_kind_name(kind)
        except KindError as exc:
            raise JobError(str(exc)) from None
        if executor not in EXECUTORS:
            raise JobError(f"executor must be one of {', '.join(EXECUTORS)}; got {executor!r}.")
        if not isinstance(model, ModelRef) or not isinstance(data, DataRef):
            raise JobError("submit needs a ModelRef and a DataRef (core.jobs.refs), not loaded objects.")
        if not isinstance(spec, dict):
            raise JobError(f"spec must be a dict (core.specs to_dict), got {type(spec).__name__}.")
        if origin is not None:
            origin = check_origin(origin)
        try:
            values = [json.dumps(v, allow_nan=False) for v in (model.to_dict(), data.to_dict(), spec, options or {})]
        except (TypeError, ValueError) as exc:
            raise JobError(f"the job cannot be stored as JSON ({exc}).") from None
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO jobs (state, executor, label, model_ref, data_ref, spec, options, created_at, message,"
                " kind) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (QUEUED, executor, label, *values, time.time(), "Waiting for a worker", kind),
            )
            if origin is not None:
                write_origin(conn, job_id=int(cursor.lastrowid), origin=origin)
            return int(cursor.lastrowid)

    def get(self, *, job_id: int) -> Job:
        self.reap()
        return self._get(job_id)

    def _get(self, job_id: int) -> Job:
        with self._connection() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (int(job_id),)).fetchone()
        if row is None:
            raise JobError(f"job #{job_id} does not exist.")
        return _job(row)

    def list(self, *, states: Iterable[str] | None = None, limit: int = 200) -> list[Job]:
        """Jobs, newest first (all states unless `states` is given)."""
        self.reap()
        query, params = f"SELECT {_COLUMNS} FROM jobs", []
        if states is not None:
            states = list(states)
            query += f" WHERE state IN ({','.join('?' * len(states))})"
            params += states
        query += " ORDER BY id DESC LIMIT ?"
        with self._connection() as conn:
            return [_job(row) for row in conn.execute(query, [*params, int(limit)]).fetchall()]

    def find_active(self, *, kind: str, model: ModelRef, data: DataRef, spec: dict | None = None,
                    options: dict | None = None) -> Job | None:
        """The newest queued or running job of `kind` on exactly these references, spec and options (None: none).

        A page that would submit the same work again (another tab, a reload) follows this job instead.
        """
        self.reap()
        values = [json.dumps(v, allow_nan=False) for v in (model.to_dict(), data.to_dict(), spec or {}, options or {})]
        with self._connection() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE state IN (?,?) AND kind=? AND model_ref=? AND data_ref=?"
                " AND spec=? AND options=? ORDER BY id DESC LIMIT 1",
                (QUEUED, RUNNING, kind, *values),
            ).fetchone()
        return _job(row) if row is not None else None

    def counts(self) -> dict[str, int]:
        """Number of jobs per state (every state present, 0 when none)."""
        self.reap()
        with self._connection() as conn:
            rows = conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {state: 0 for state in STATES} | {state: int(n) for state, n in rows}

    def counts_by_executor(self, *, state: str) -> dict[str, int]:
        """Number of jobs in `state` per executor (no reaping: cheap enough for every rerun of a page)."""
        with self._connection() as conn:
            rows = conn.execute("SELECT executor, COUNT(*) FROM jobs WHERE state=? GROUP BY executor", (state,))
            return {executor: int(n) for executor, n in rows.fetchall()}

    def wait(self, *, job_ids: Sequence[int], timeout: float = 600.0, poll: float = 0.2) -> list[Job]:
        """Block until every job has finished (or `timeout` seconds passed); returns the jobs as they are then."""
        deadline = time.monotonic() + timeout
        while True:
            jobs = [self.get(job_id=i) for i in job_ids]
            if all(job.finished for job in jobs) or time.monotonic() > deadline:
                return jobs
            time.sleep(poll)

    # ---- cancelling
    def cancel(self, *, job_id: int) -> str:
        """Cancel a job: a queued one at once, a running one at its next progress update. Returns its state."""
        with self._transaction() as conn:
            row = conn.execute("SELECT state FROM jobs WHERE id=?", (int(job_id),)).fetchone()
            if row is None:
                raise JobError(f"job #{job_id} does not exist.")
            if row[0] == QUEUED:
                conn.execute(
                    "UPDATE jobs SET state=?, finished_at=?, message=? WHERE id=?",
                    (CANCELLED, time.time(), "Cancelled before it started", int(job_id)),
                )
                return CANCELLED
            if row[0] == RUNNING:
                conn.execute("UPDATE jobs SET cancel_requested=1, message=? WHERE id=?", ("Cancelling…", int(job_id)))
            return row[0]

    # ---- the worker's side
    def claim(self, *, executor: str = "local", job_id: int | None = None, pid: int | None = None) -> Job | None:
        """Atomically take the oldest queued job of `executor` (or exactly `job_id`) for process `pid`."""
        pid = os.getpid() if pid is None else int(pid)
        with self._transaction() as conn:
            if job_id is None:
                row = conn.execute(
                    "SELECT id FROM jobs WHERE state=? AND executor=? ORDER BY id LIMIT 1", (QUEUED, executor)
                ).fetchone()
            else:
                row = conn.execute("SELECT id FROM jobs WHERE state=? AND id=?", (QUEUED, int(job_id))).fetchone()
            if row is None:
                return None
            now = time.time()
            conn.execute(
                "UPDATE jobs SET state=?, started_at=?, heartbeat_at=?, worker_pid=?, worker_host=?, message=?"
                " WHERE id=?",
                (RUNNING, now, now, pid, this_host(), "Starting", int(row[0])),
            )
        return self._get(int(row[0]))

    def report_progress(self, *, job_id: int, fraction: float, message: str) -> bool:
        """Write a running job's progress (and heartbeat); returns True if a cancel was requested."""
        with self._connection() as conn:
            conn.execute(
                "UPDATE jobs SET progress=?, message=?, heartbeat_at=? WHERE id=? AND state=?",
                (float(min(max(fraction, 0.0), 1.0)), message[:300], time.time(), int(job_id), RUNNING),
            )
            row = conn.execute("SELECT cancel_requested FROM jobs WHERE id=?", (int(job_id),)).fetchone()
        return bool(row and row[0])

    def heartbeat(self, *, job_id: int | None, pid: int | None = None) -> bool:
        """Say the worker (and its job) is alive; returns True if the job's cancel was requested."""
        now, pid = time.time(), os.getpid() if pid is None else int(pid)
        with self._connection() as conn:
            conn.execute("UPDATE job_workers SET heartbeat_at=? WHERE host=? AND pid=?", (now, this_host(), pid))
            if job_id is None:
                return False
            conn.execute("UPDATE jobs SET heartbeat_at=? WHERE id=? AND state=?", (now, int(job_id), RUNNING))
            row = conn.execute("SELECT cancel_requested FROM jobs WHERE id=?", (int(job_id),)).fetchone()
        return bool(row and row[0])

    def finish(self, *, job_id: int, experiment_id: int | None, phase_seconds: dict | None = None,
               result: dict | None = None, message: str = "Done") -> None:
        """The job saved experiment `experiment_id` (or produced `result`): done (even if a reaper wrongly gave up
        on it meanwhile)."""
        with self._connection() as conn:
            conn.execute(
                "UPDATE jobs SET state=?, experiment_id=?, progress=1, message=?, finished_at=?, error=NULL,"
                " phase_seconds=?, result=? WHERE id=?",
                (DONE, int(experiment_id) if experiment_id is not None else None, message[:300], time.time(),
                 json.dumps(phase_seconds or {}), json.dumps(result) if result is not None else None, int(job_id)),
            )

    def fail(self, *, job_id: int, reason: str, phase_seconds: dict | None = None) -> None:
        """Mark a running or queued job failed with a one-line reason."""
        line = (reason.strip().splitlines() or ["failed"])[0][:300]
        with self._connection() as conn:
            conn.execute(
                "UPDATE jobs SET state=?, error=?, message=?, finished_at=?, phase_seconds=?"
                " WHERE id=? AND state IN (?,?)",
                (FAILED, line, "Failed", time.time(), json.dumps(phase_seconds) if phase_seconds else None,
                 int(job_id), QUEUED, RUNNING),
            )
        self.remove_staging(job_id=job_id)

    def mark_cancelled(self, *, job_id: int) -> None:
        with self._connection() as conn:
            conn.execute(
                "UPDATE jobs SET state=?, message=?, finished_at=? WHERE id=? AND state=?",
                (CANCELLED, "Cancelled; nothing was saved", time.time(), int(job_id), RUNNING),
            )
        self.remove_staging(job_id=job_id)

    def staging_prefix(self, *, job_id: int) -> str:
        return f"{JOB_STAGING_PREFIX}{int(job_id):06d}_"

    def remove_staging(self, *, job_id: int) -> None:
        """Remove every staging folder of a job (what a killed run left half-written)."""
        if self.staging_root.is_dir():
            for folder in self.staging_root.glob(f"{self.staging_prefix(job_id=job_id)}*"):
                shutil.rmtree(folder, ignore_errors=True)

    # ---- workers
    def register_worker(self, *, max_workers: int, pid: int | None = None) -> bool:
        """Enter this worker in the worker table unless `max_workers` live ones are there already."""
        pid, host, now = os.getpid() if pid is None else int(pid), this_host(), time.time()
        with self._transaction() as conn:
            self._prune_workers(conn)
            live = int(conn.execute("SELECT COUNT(*) FROM job_workers").fetchone()[0])
            if live >= max_workers:
                return False
            conn.execute("INSERT OR REPLACE INTO job_workers VALUES (?,?,?,?)", (host, pid, now, now))
        return True

    def retire_worker_if_idle(self, *, executor: str = "local", pid: int | None = None) -> bool:
        """Unregister this worker unless jobs are queued, in one transaction: a job submitted just before is never
        left without a worker (the submitter's ensure_workers either still counts this one, or sees it gone)."""
        pid = os.getpid() if pid is None else int(pid)
        with self._transaction() as conn:
            queued = conn.execute("SELECT COUNT(*) FROM jobs WHERE state=? AND executor=?", (QUEUED, executor))
            if int(queued.fetchone()[0]):
                return False
            conn.execute("DELETE FROM job_workers WHERE host=? AND pid=?", (this_host(), pid))
        return True

    def unregister_worker(self, *, pid: int | None = None) -> None:
        pid = os.getpid() if pid is None else int(pid)
        with self._connection() as conn:
            conn.execute("DELETE FROM job_workers WHERE host=? AND pid=?", (this_host(), pid))

    def worker_pids(self) -> set[int]:
        """Pids of the registered workers on this host."""
        with self._connection() as conn:
            rows = conn.execute("SELECT pid FROM job_workers WHERE host=?", (this_host(),)).fetchall()
        return {int(pid) for (pid,) in rows}

    def live_workers(self) -> int:
        with self._transaction() as conn:
            self._prune_workers(conn)
            return int(conn.execute("SELECT COUNT(*) FROM job_workers").fetchone()[0])

    def _prune_workers(self, conn: sqlite3.Connection) -> None:
        host, cutoff = this_host(), time.time() - self.stale_after
        for worker_host, pid, beat in conn.execute("SELECT host, pid, heartbeat_at FROM job_workers").fetchall():
            if beat < cutoff or (worker_host == host and not pid_alive(pid)):
                conn.execute("DELETE FROM job_workers WHERE host=? AND pid=?", (worker_host, pid))

    # ---- faults
    def reap(self) -> list[int]:
        """Fail running jobs whose worker is gone (dead pid here, or no heartbeat for `stale_after` s).

        Returns the ids it failed. Their staging folders are removed; the store never saw them (a save is one
        transaction), so no partial experiment exists.
        """
        for probe in _exit_probes:
            probe(None)
        host, cutoff = this_host(), time.time() - self.stale_after
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT id, worker_pid, worker_host, heartbeat_at FROM jobs WHERE state=?", (RUNNING,)
            ).fetchall()
        failed = []
        for job_id, pid, worker_host, beat in rows:
            reason = None
            if worker_host == host and pid is not None and not pid_alive(int(pid)):
                for probe in _exit_probes:  # a child of ours may still be dying (other threads exiting): wait
                    probe(int(pid))
                code = _reaped_children.get(int(pid))
                how = exit_reason(code) if code is not None else f"process {pid} ended without finishing the job"
                reason = f"worker stopped: {how}"
            elif beat is not None and beat < cutoff:
                reason = f"worker stopped: no heartbeat from process {pid} on {worker_host} for {time.time() - beat:.0f} s"
            if reason is None:
                continue
            with self._connection() as conn:
                changed = conn.execute(
                    "UPDATE jobs SET state=?, error=?, message=?, finished_at=? WHERE id=? AND state=? AND worker_pid=?",
                    (FAILED, reason, "Failed", time.time(), int(job_id), RUNNING, pid),
                ).rowcount
            if changed:
                self.remove_staging(job_id=int(job_id))
                failed.append(int(job_id))
        return failed
