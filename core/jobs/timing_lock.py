"""A machine-wide reader/writer lock so latency is only timed while no other job computes.

Jobs hold the lock shared while they compute (any number at once); the latency phase converts it to exclusive,
so it waits until no other job on the machine holds it (they finished, or wait to time themselves), and no job
starts computing while it times. The lock is ``fcntl.flock`` on one file (``/tmp`` by default: machine-wide, whatever the data folder),
so it covers every worker process of every studio on this machine, and the kernel drops it when a process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

TIMING_LOCK_ENV = "COMPRESSION_STUDIO_TIMING_LOCK"


def default_lock_path() -> Path:
    """``$COMPRESSION_STUDIO_TIMING_LOCK`` if set, else one file in the system temp folder (machine-wide)."""
    env = os.environ.get(TIMING_LOCK_ENV)
    return Path(env) if env else Path(tempfile.gettempdir()) / "compression-studio-timing.lock"


class TimingLock:
    """One process's handle on the machine-wide lock: ``compute()`` shared, ``timing()`` exclusive.

    Both use the same open file, so ``timing()`` inside ``compute()`` converts this process's own shared lock
    instead of waiting on it. ``exclusive_seconds`` / ``timed_exclusively`` say what the last job got.
    """

    def __init__(self, *, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_lock_path()
        self._fd: int | None = None
        self._mode = 0  # 0 none, LOCK_SH or LOCK_EX currently held
        self._mutex = threading.Lock()
        self.timed_exclusively: bool | None = None  # None: no timing phase ran

    def _file(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        return self._fd

    def _set(self, mode: int) -> None:
        fd = self._file()
        if mode == 0:
            fcntl.flock(fd, fcntl.LOCK_UN)
        else:
            fcntl.flock(fd, mode)  # blocks until granted; a conversion first drops the old lock (no deadlock)
        self._mode = mode

    @contextlib.contextmanager
    def compute(self) -> Iterator[None]:
        """Held (shared) around a job's compute phases; other jobs may compute at the same time."""
        with self._mutex:
            previous = self._mode
            if previous == 0:
                self._set(fcntl.LOCK_SH)
        try:
            yield
        finally:
            with self._mutex:
                if previous == 0:
                    self._set(0)

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        """Held (exclusive) around a latency measurement: no other job computes meanwhile."""
        with self._mutex:
            previous = self._mode
            if previous != fcntl.LOCK_EX:
                self._set(fcntl.LOCK_EX)
        self.timed_exclusively = True
        try:
            yield
        finally:
            with self._mutex:
                if previous != fcntl.LOCK_EX:
                    self._set(previous)

    def reset(self) -> None:
        """Forget what the previous job got (called before each job)."""
        self.timed_exclusively = None

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd, self._mode = None, 0

    def held_by_others_exclusively(self) -> bool:
        """True while some other process times (a shared lock cannot be had right now); for tests and the UI."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the probe's lock
        return False
