"""Choosing an executor and a worker count: arguments, environment variables, clear refusals."""

from __future__ import annotations

import sys

import pytest

from core.jobs import ExecutorError, LocalExecutor, RayExecutor, default_worker_count, executor_name, get_executor
from core.jobs.executors import ray_endpoint, worker_command


def test_executor_comes_from_the_argument_then_the_environment(monkeypatch: pytest.MonkeyPatch, home) -> None:
    monkeypatch.delenv("COMPRESSION_STUDIO_EXECUTOR", raising=False)
    assert executor_name() == "local" and isinstance(get_executor(home=home), LocalExecutor)
    monkeypatch.setenv("COMPRESSION_STUDIO_EXECUTOR", "ray")
    assert executor_name() == "ray" and isinstance(get_executor(home=home), RayExecutor)
    assert executor_name(name="local") == "local"
    monkeypatch.setenv("COMPRESSION_STUDIO_EXECUTOR", "slurm")
    with pytest.raises(ExecutorError, match="unknown executor 'slurm'; choose one of local, ray"):
        executor_name()


def test_worker_count_defaults_to_the_cores_and_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMPRESSION_STUDIO_WORKERS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert default_worker_count() == 2
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert default_worker_count() == 4
    monkeypatch.setenv("COMPRESSION_STUDIO_WORKERS", "3")
    assert default_worker_count() == 3
    monkeypatch.setenv("COMPRESSION_STUDIO_WORKERS", "many")
    with pytest.raises(ExecutorError, match="COMPRESSION_STUDIO_WORKERS must be a whole number"):
        default_worker_count()


def test_ray_addresses_are_parsed_for_the_reachability_probe() -> None:
    assert ray_endpoint("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert ray_endpoint("ray://head.example:10001") == ("head.example", 10001)
    assert ray_endpoint("ray://head.example") == ("head.example", 10001)
    assert ray_endpoint("auto") is None
    with pytest.raises(ExecutorError, match="not host:port"):
        ray_endpoint("head:port")


def test_worker_command_is_the_module_entry_point(tmp_path) -> None:
    command = worker_command(home=tmp_path, max_workers=2, idle_timeout=30, threads=1)
    assert command[:3] == [sys.executable, "-m", "core.jobs.worker"] and str(tmp_path) in command


def test_a_started_worker_waits_for_work_as_long_as_the_idle_timeout_says(home) -> None:
    """The worker a submit starts gets the idle timeout (COMPRESSION_STUDIO_WORKER_IDLE: 20 s here), not the count of
    idle workers: with 0 s it would exit before the next job arrives and leave that job queued."""
    import os
    import signal
    from pathlib import Path

    from core.jobs import JobQueue
    from core.jobs.executors import ensure_workers
    from tests.jobs.conftest import BUNDLED, CNN, FAST_OPTIONS, wait_until

    JobQueue(home=home).submit(model=CNN, data=BUNDLED, spec={"method": "palettize", "n_bits": 8},
                               options=FAST_OPTIONS, executor="local")
    [pid] = ensure_workers(home=home, max_workers=1)
    try:
        def worker_argv() -> list[bytes] | None:  # the forked child shows its own command line once it has exec'd
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            return argv if b"core.jobs.worker" in argv else None

        argv = wait_until(worker_argv, timeout=60, what="the worker process to start")
        assert argv[argv.index(b"--idle-timeout") + 1] == b"20.0"
    finally:
        os.killpg(pid, signal.SIGKILL)
