"""The worker process: ``python -m core.jobs.worker --home DIR``.

Registers itself (at most ``--max-workers`` per data folder), then claims local jobs one at a time and runs them
with ``core.jobs.runner.run_claimed_job``, keeping models loaded between jobs. Exits after ``--idle-timeout``
seconds without work. Everything a run changes process-wide (stdout, loggers, torch threads, quantized engine)
changes here, never in the app's process.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from core.jobs.kinds import waits_for_jobs
from core.jobs.queue import JobQueue, this_host
from core.jobs.runner import Heartbeat, WarmCache, run_claimed_job
from core.jobs.timing_lock import TimingLock

DEFAULT_IDLE_TIMEOUT = 120.0
POLL_INTERVAL = 0.3


def serve(
    *,
    home: Path,
    max_workers: int,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    max_jobs: int | None = None,
    threads: int | None = None,
    lock_path: Path | None = None,
) -> int:
    """Claim and run jobs until idle for `idle_timeout` s (or `max_jobs` ran); returns how many ran."""
    queue = JobQueue(home=home)
    if not queue.register_worker(max_workers=max_workers):
        return 0  # enough workers serve this data folder already
    _quiet_process(threads=threads)
    heartbeat = Heartbeat(queue=queue).start()
    cache, lock, ran = WarmCache(), TimingLock(path=lock_path), 0
    idle_since = time.monotonic()
    try:
        while (max_jobs is None or ran < max_jobs) and queue.db_path.exists():  # a deleted data folder: stop
            queue.reap()
            job = queue.claim(executor="local")
            if job is None:
                if time.monotonic() - idle_since > idle_timeout and queue.retire_worker_if_idle():
                    break
                time.sleep(POLL_INTERVAL)
                continue
            _share_cores(queue=queue, threads=threads)
            run_claimed_job(queue=queue, job=job, cache=cache, lock=lock, heartbeat=heartbeat)
            ran += 1
            idle_since = time.monotonic()
    finally:
        heartbeat.stop()
        queue.unregister_worker()
        lock.close()
    return ran


def _quiet_process(*, threads: int | None) -> None:
    """This process is the worker's own: silence library noise once."""
    from core.progress import quiet_libraries

    quiet_libraries()


def _share_cores(*, queue: JobQueue, threads: int | None) -> None:
    """torch threads for the next job: `threads` if given, else the cores split among the jobs running here now
    (one job alone gets every core: the fast loop; two at once get half each instead of oversubscribing)."""
    import torch

    if not threads:
        running = sum(1 for job in queue.list(states=["running"])
                      if job.worker_host == this_host() and not waits_for_jobs(job.kind))  # computing, not waiting
        threads = max(1, (os.cpu_count() or 1) // max(1, running))
    torch.set_num_threads(max(1, threads))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.jobs.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="the data folder whose queue to serve")
    parser.add_argument("--max-workers", type=int, default=1, help="do not start if this many already serve it")
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT, help="exit after this many idle s")
    parser.add_argument("--max-jobs", type=int, default=None, help="exit after running this many jobs")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads per job (default: the cores split among the jobs running here)")
    parser.add_argument("--lock", type=Path, default=None, help="the machine-wide timing lock file")
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    serve(
        home=args.home, max_workers=args.max_workers, idle_timeout=args.idle_timeout, max_jobs=args.max_jobs,
        threads=args.threads, lock_path=args.lock,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
