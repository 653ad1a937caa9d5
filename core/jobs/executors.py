"""Where jobs run: ``local`` worker processes on this machine (default) or tasks on a Ray cluster.

Both put the job in the same queue and run the same function (``core.jobs.runner.run_claimed_job``), so the
record lands in the same store either way. Choose with ``executor=`` or ``$COMPRESSION_STUDIO_EXECUTOR``
(``local`` / ``ray``); the Ray cluster's address comes from ``ray_address=`` or ``$COMPRESSION_STUDIO_RAY_ADDRESS``
(none: a Ray instance on this machine). Ray is imported only when the Ray executor is used.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.jobs.queue import EXPERIMENT_JOB, QUEUED, RUNNING, JobQueue, add_exit_probe, note_child_exit
from core.jobs.refs import DataRef, ModelRef
from core.paths import PROJECT_ROOT, job_logs_dir, studio_home

EXECUTOR_ENV = "COMPRESSION_STUDIO_EXECUTOR"
WORKERS_ENV = "COMPRESSION_STUDIO_WORKERS"
RAY_ADDRESS_ENV = "COMPRESSION_STUDIO_RAY_ADDRESS"
RAY_CPUS_ENV = "COMPRESSION_STUDIO_RAY_CPUS"  # CPUs of a Ray instance started on this machine (no address given)
IDLE_TIMEOUT_ENV = "COMPRESSION_STUDIO_WORKER_IDLE"
EXECUTOR_NAMES = ("local", "ray")
RAY_CONNECT_TIMEOUT = 5.0


class ExecutorError(RuntimeError):
    """The chosen executor cannot run jobs; the message says why and what to do."""


def executor_name(*, name: str | None = None) -> str:
    """`name`, else ``$COMPRESSION_STUDIO_EXECUTOR``, else 'local'; anything else is refused with the choices."""
    chosen = (name or os.environ.get(EXECUTOR_ENV) or "local").strip().lower()
    if chosen not in EXECUTOR_NAMES:
        raise ExecutorError(f"unknown executor {chosen!r}; choose one of {', '.join(EXECUTOR_NAMES)} "
                            f"(argument or ${EXECUTOR_ENV}).")
    return chosen


def default_worker_count() -> int:
    """``$COMPRESSION_STUDIO_WORKERS`` if set, else one worker per core, at most 4 (2 cores → 2 workers)."""
    count = _positive_int_env(WORKERS_ENV, unit="workers")
    return count if count is not None else max(1, min(4, os.cpu_count() or 1))


def _positive_int_env(name: str, *, unit: str) -> int | None:
    """The whole number ≥ 1 in environment variable `name`; None when unset; ExecutorError naming it otherwise."""
    env = os.environ.get(name)
    if not env:
        return None
    try:
        count = int(env)
    except ValueError:
        raise ExecutorError(f"${name} must be a whole number of {unit}; got {env!r}.") from None
    if count < 1:
        raise ExecutorError(f"${name} must be at least 1; got {count}.")
    return count


# --------------------------------------------------------------------------- local worker processes

_children: dict[Path, list[subprocess.Popen]] = {}  # data folder → workers this process started for it
_children_lock = threading.Lock()


def _reap_children(home: Path | None = None) -> list[int]:
    """Collect exit codes of workers this process started (so the queue can say 'killed by signal 9');
    returns the pids of those still running for `home` (all homes when None)."""
    alive = []
    with _children_lock:
        for folder, children in _children.items():
            for child in list(children):
                code = child.poll()
                if code is None:
                    if home is None or folder == home:
                        alive.append(child.pid)
                else:
                    note_child_exit(pid=child.pid, returncode=code)
                    children.remove(child)
    return alive


def _collect_exit(pid: int | None) -> None:
    """Queue probe: collect exit codes; for a dying child `pid`, wait a moment until it can be reaped (a
    multi-threaded process looks dead in /proc before its last thread has gone)."""
    if pid is not None:
        with _children_lock:
            child = next((c for cs in _children.values() for c in cs if c.pid == pid), None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=2.0)
    _reap_children()


add_exit_probe(_collect_exit)


def worker_command(
    *, home: Path, max_workers: int, idle_timeout: float, threads: int | None = None, lock_path: Path | None = None,
    max_jobs: int | None = None,
) -> list[str]:
    command = [
        sys.executable, "-m", "core.jobs.worker", "--home", str(home), "--max-workers", str(max_workers),
        "--idle-timeout", str(idle_timeout),
    ]
    if threads is not None:
        command += ["--threads", str(threads)]
    if lock_path is not None:
        command += ["--lock", str(lock_path)]
    if max_jobs is not None:
        command += ["--max-jobs", str(max_jobs)]
    return command


def ensure_workers(
    *,
    home: Path | None = None,
    max_workers: int | None = None,
    idle_timeout: float | None = None,
    lock_path: Path | None = None,
) -> list[int]:
    """Start worker processes for the queued local jobs of `home`, up to `max_workers` in all; returns new pids.

    Any process may call it (the app on every submit and rerun, the CLI): workers register in the queue, so
    the limit holds across processes, and a surplus worker exits at once. Also reaps dead workers' jobs.
    """
    home = Path(home).expanduser() if home is not None else studio_home()
    max_workers = max_workers or default_worker_count()
    idle_seconds = idle_timeout if idle_timeout is not None else float(os.environ.get(IDLE_TIMEOUT_ENV, "120"))
    queue = JobQueue(home=home)
    starting = _reap_children(home)
    queue.reap()
    queued = queue.counts_by_executor(state=QUEUED).get("local", 0)
    if queued == 0:
        return []
    registered = queue.worker_pids()
    starting = [pid for pid in starting if pid not in registered]
    live = queue.live_workers()
    # A busy worker takes no queued job (a budget search's worker waits for its own runs): count the idle ones.
    idle_workers = max(0, live - queue.counts_by_executor(state=RUNNING).get("local", 0))
    wanted = min(queued - idle_workers, max_workers - live) - len(starting)
    log_dir = job_logs_dir(home)
    log_dir.mkdir(parents=True, exist_ok=True)
    started = []
    for _ in range(max(0, wanted)):
        with open(log_dir / "workers.log", "ab") as log:
            child = subprocess.Popen(
                worker_command(home=home, max_workers=max_workers, idle_timeout=idle_seconds, lock_path=lock_path),
                cwd=PROJECT_ROOT,
                env=_worker_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C or a restart of the app does not kill a job mid-save
            )
        with _children_lock:
            _children.setdefault(home, []).append(child)
        started.append(child.pid)
    return started


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TQDM_DISABLE", "1")
    return env


class LocalExecutor:
    """Jobs run by worker processes on this machine (``python -m core.jobs.worker``)."""

    name = "local"

    def __init__(self, *, home: Path | None = None, max_workers: int | None = None,
                 lock_path: Path | None = None) -> None:
        self.queue = JobQueue(home=home)
        self.max_workers = max_workers or default_worker_count()
        self.lock_path = lock_path

    def submit(self, *, model: ModelRef, data: DataRef, spec: dict, options: dict | None = None,
               label: str = "", origin: dict | None = None, kind: str = EXPERIMENT_JOB) -> int:
        job_id = self.queue.submit(model=model, data=data, spec=spec, options=options, executor="local", label=label,
                                   origin=origin, kind=kind)
        self.ensure_workers()
        return job_id

    def ensure_workers(self) -> list[int]:
        return ensure_workers(home=self.queue.home, max_workers=self.max_workers, lock_path=self.lock_path)

    def wait(self, *, job_ids: list[int], timeout: float = 600.0, poll: float = 0.2) -> list:
        """Wait for `job_ids` to finish, restarting workers if they stopped (crashed, idled out) meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            self.ensure_workers()
            jobs = self.queue.wait(job_ids=job_ids, timeout=min(2.0, max(0.0, deadline - time.monotonic())),
                                   poll=poll)
            if all(job.finished for job in jobs) or time.monotonic() > deadline:
                return jobs


# --------------------------------------------------------------------------- Ray


def ray_endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) to probe for a Ray address ('host:port' or 'ray://host:port'); None for 'auto' / 'local'."""
    if address in ("auto", "local"):
        return None
    client = address.startswith("ray://")
    rest = address.removeprefix("ray://").rstrip("/")
    host, _, port = rest.rpartition(":")
    if not host:
        host, port = rest, ""
    try:
        return host, int(port) if port else (10001 if client else 6379)
    except ValueError:
        raise ExecutorError(f"Ray address {address!r} is not host:port or ray://host:port.") from None


def check_ray_reachable(*, address: str, timeout: float = RAY_CONNECT_TIMEOUT) -> None:
    """Fail fast (ExecutorError naming the address) when nothing listens there, instead of hanging in ray.init."""
    endpoint = ray_endpoint(address)
    if endpoint is None:
        return
    try:
        with socket.create_connection(endpoint, timeout=timeout):
            return
    except OSError as exc:
        raise ExecutorError(
            f"no Ray cluster is reachable at {address} ({exc.strerror or exc}). Start one with `ray start --head` "
            f"and set ${RAY_ADDRESS_ENV} to the address it prints, or use the local executor."
        ) from None


def _run_ray_job(home: str, job_id: int, lock_path: str | None) -> str:
    """The Ray task: claim job `job_id` and run it exactly as a local worker would (warm cache per Ray worker)."""
    from core.jobs.runner import Heartbeat, run_claimed_job
    from core.jobs.timing_lock import TimingLock

    global _RAY_STATE
    queue = JobQueue(home=Path(home))
    job = queue.claim(executor="ray", job_id=job_id)
    if job is None:
        return "not queued"
    if _RAY_STATE is None:
        from core.jobs.runner import WarmCache
        from core.progress import quiet_libraries

        quiet_libraries()
        _RAY_STATE = (WarmCache(), TimingLock(path=Path(lock_path) if lock_path else None))
    cache, lock = _RAY_STATE
    heartbeat = Heartbeat(queue=queue).start()
    try:
        return run_claimed_job(queue=queue, job=job, cache=cache, lock=lock, heartbeat=heartbeat)
    finally:
        heartbeat.stop()


_RAY_STATE: Any = None


_lasting_threads: list[threading.Thread] = []


def _on_lasting_thread(start: Callable[[], object]) -> None:
    """Run `start` (ray.init of a local instance) on a thread that lives as long as this process.

    On Linux Ray ties the processes of a local instance to the *thread* that started them (a parent-death signal,
    SIGKILL): started from a Streamlit script run, whose thread ends after every rerun, the instance would die
    seconds later. From the main thread (the CLI, a notebook) it runs in place.
    """
    if threading.current_thread() is threading.main_thread():
        start()
        return
    started, errors = threading.Event(), []

    def hold() -> None:
        try:
            start()
        except BaseException as exc:  # handed to the caller below
            errors.append(exc)
        finally:
            started.set()
        if not errors:
            threading.Event().wait()  # never set: the instance's processes live as long as this thread

    thread = threading.Thread(target=hold, name="ray-local-instance", daemon=True)
    thread.start()
    started.wait()
    if errors:
        raise errors[0]
    _lasting_threads.append(thread)


def _env_cpus() -> int | None:
    """``$COMPRESSION_STUDIO_RAY_CPUS`` (None: Ray counts the cores itself)."""
    return _positive_int_env(RAY_CPUS_ENV, unit="CPUs")


class RayExecutor:
    """Jobs run as Ray tasks; results land in the same store (the workers must see the same data folder)."""

    name = "ray"

    def __init__(self, *, home: Path | None = None, address: str | None = None, num_cpus: int | None = None,
                 lock_path: Path | None = None) -> None:
        self.queue = JobQueue(home=home)
        self.address = address if address is not None else os.environ.get(RAY_ADDRESS_ENV) or None
        self.num_cpus = num_cpus if num_cpus is not None else _env_cpus()
        self.lock_path = lock_path
        self._task: Any = None
        self.pending: dict[int, Any] = {}  # job id → Ray ObjectRef (the task's final state)

    def connect(self) -> None:
        """ray.init: the cluster at `address`, or a local instance; an unreachable address fails within seconds."""
        if self.address:
            check_ray_reachable(address=self.address)
        import ray

        if not ray.is_initialized():
            runtime_env = {"env_vars": {"PYTHONPATH": str(PROJECT_ROOT), "TQDM_DISABLE": "1"}}
            try:
                if self.address:
                    ray.init(address=self.address, runtime_env=runtime_env, log_to_driver=False)
                else:
                    _on_lasting_thread(lambda: ray.init(num_cpus=self.num_cpus, runtime_env=runtime_env,
                                                        log_to_driver=False, include_dashboard=False))
            except Exception as exc:
                where = self.address or "a local Ray instance"
                raise ExecutorError(f"cannot connect to Ray at {where}: {str(exc).strip().splitlines()[0]}") from None
        if self._task is None:
            self._task = ray.remote(num_cpus=1, max_retries=0)(_run_ray_job)

    def submit(self, *, model: ModelRef, data: DataRef, spec: dict, options: dict | None = None,
               label: str = "", origin: dict | None = None, kind: str = EXPERIMENT_JOB) -> int:
        self.connect()
        job_id = self.queue.submit(model=model, data=data, spec=spec, options=options, executor="ray", label=label,
                                   origin=origin, kind=kind)
        self.pending[job_id] = self._task.remote(
            str(self.queue.home), job_id, str(self.lock_path) if self.lock_path else None
        )
        return job_id

    def resume(self) -> list[int]:
        """Give a Ray task to every queued ray job without one in this process (what a restarted app finds);
        returns their ids. A job another process also handed to Ray runs once: the first task claims it."""
        self.queue.reap()
        waiting = [job.id for job in self.queue.list(states=[QUEUED]) if job.executor == "ray"]
        waiting = [job_id for job_id in waiting if job_id not in self.pending]
        if waiting:
            self.connect()
            for job_id in sorted(waiting):
                self.pending[job_id] = self._task.remote(
                    str(self.queue.home), job_id, str(self.lock_path) if self.lock_path else None
                )
        return waiting

    def wait(self, *, job_ids: list[int], timeout: float = 600.0) -> list:
        """Wait for the Ray tasks of `job_ids`, then return their jobs from the queue."""
        import ray

        refs = [self.pending[i] for i in job_ids if i in self.pending]
        deadline = time.monotonic() + timeout
        ray.wait(refs, num_returns=len(refs), timeout=timeout)
        return self.queue.wait(job_ids=job_ids, timeout=max(1.0, deadline - time.monotonic()))


def get_executor(
    *, name: str | None = None, home: Path | None = None, ray_address: str | None = None,
    max_workers: int | None = None,
) -> LocalExecutor | RayExecutor:
    """The executor chosen by `name` / ``$COMPRESSION_STUDIO_EXECUTOR`` (default local)."""
    if executor_name(name=name) == "ray":
        return RayExecutor(home=home, address=ray_address)
    return LocalExecutor(home=home, max_workers=max_workers)
