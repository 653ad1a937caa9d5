"""The machine-wide timing lock across real processes: timing waits for compute, compute waits for timing."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from core.jobs.timing_lock import TimingLock
from core.paths import PROJECT_ROOT

_HOLDER = """
import sys, time
from pathlib import Path
from core.jobs.timing_lock import TimingLock
lock = TimingLock(path=Path(sys.argv[1]))
with (lock.timing() if sys.argv[2] == "timing" else lock.compute()):
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def _hold(path: Path, mode: str, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path), mode, str(seconds)], cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_timing_waits_until_no_other_process_computes(tmp_path: Path) -> None:
    path = tmp_path / "timing.lock"
    other = _hold(path, "compute", 1.0)
    lock = TimingLock(path=path)
    with lock.compute():  # computing beside another job is fine
        started = time.monotonic()
        with lock.timing():  # converts this process's shared lock; waits for the other job's compute to end
            waited = time.monotonic() - started
        assert lock.timed_exclusively is True
    assert waited > 0.5
    other.wait()


def test_compute_waits_while_another_process_times(tmp_path: Path) -> None:
    path = tmp_path / "timing.lock"
    timer = _hold(path, "timing", 1.0)
    lock = TimingLock(path=path)
    assert lock.held_by_others_exclusively()
    started = time.monotonic()
    with lock.compute():
        assert time.monotonic() - started > 0.5
    timer.wait()
    assert not lock.held_by_others_exclusively()


def test_two_computing_processes_share_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "timing.lock"
    other = _hold(path, "compute", 2.0)
    lock = TimingLock(path=path)
    started = time.monotonic()
    with lock.compute():
        assert time.monotonic() - started < 0.5 and other.poll() is None
    other.wait()
