"""Progress reporting and cancellation shared by every long step, plus silencing of library noise.

A long step takes `progress: Progress | None`. It calls `progress.update(fraction, message)`, which raises
`Cancelled` once `progress.cancel()` was called (from a UI button or Ctrl-C). The UI maps updates onto
st.progress/st.status; the CLI onto a tqdm bar on stderr.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

ProgressCallback = Callable[[float, str], None]


class Cancelled(Exception):
    """The user cancelled a long step; nothing was recorded."""


class _HighWater:
    """The furthest point one bar has reached, shared by its sub-ranges (steps may run on two threads at once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0.0

    def advance(self, fraction: float) -> float:
        with self._lock:
            self._value = max(self._value, fraction)
            return self._value


@dataclass
class Progress:
    """Forwards (fraction, message) to a callback; sub-ranges let nested steps share one bar, which never moves
    back (the Core ML export reports from a helper thread while the evaluation reports an earlier range)."""

    callback: ProgressCallback | None = None
    start: float = 0.0
    end: float = 1.0
    _cancel: threading.Event = field(default_factory=threading.Event)
    _mark: _HighWater = field(default_factory=_HighWater)

    def update(self, fraction: float, message: str = "") -> None:
        if self._cancel.is_set():
            raise Cancelled("cancelled by the user")
        if self.callback is not None:
            frac = self.start + (self.end - self.start) * min(max(fraction, 0.0), 1.0)
            self.callback(self._mark.advance(frac), message)

    def sub(self, start: float, end: float) -> Progress:
        """A child reporting into [start, end] of this one's range; shares the cancel flag and the bar's mark."""
        span = self.end - self.start
        return Progress(self.callback, self.start + span * start, self.start + span * end, self._cancel, self._mark)

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()


def as_progress(progress: Progress | ProgressCallback | None) -> Progress:
    if isinstance(progress, Progress):
        return progress
    return Progress(progress)


_NOISY_LOGGERS = ("coremltools", "torch", "torch.ao", "torch.fx", "torch.export", "torch._dynamo", "urllib3")


def quiet_libraries() -> None:
    """Once per process: silence coremltools' version warnings, tqdm bars and library loggers."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    for name in _NOISY_LOGGERS:
        if logging.getLogger(name).level != logging.ERROR:
            logging.getLogger(name).setLevel(logging.ERROR)
    # Some children (coremltools.optimize.torch) set their own level and stderr handler; quiet those too.
    # Only loggers not yet at ERROR: every setLevel clears every logger's cache, so setting ~850 loggers on each
    # Streamlit rerun took 0.05–0.17 s; the levels that result are the same.
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and logger.level != logging.ERROR and name.startswith(_NOISY_LOGGERS):
            logger.setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*has not been tested with coremltools.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)


_UNTESTED = "has not been tested"
_IMPORTANT_MARKERS = (_UNTESTED, "deprecated")  # library lines that change what a user should trust or expect


def is_library_warning(line: str) -> bool:
    """A captured library line that matters to the user: an untested library version, anything deprecated."""
    lowered = line.lower()
    return any(marker in lowered for marker in _IMPORTANT_MARKERS)


def library_version_warnings() -> list[str]:
    """'torch X has not been tested with coremltools (newest tested: Y)' when that is so; coremltools says it only
    once, in a log line at import, so every run's record restates it here."""
    import torch

    from core.library_internals import COREMLTOOLS_TESTED_TORCH

    if not COREMLTOOLS_TESTED_TORCH:
        return []
    try:
        from packaging.version import Version

        newer = Version(torch.__version__.split("+")[0]) > Version(COREMLTOOLS_TESTED_TORCH)
    except Exception:  # an unparsable version string: say nothing rather than guess
        return []
    if not newer:
        return []
    import coremltools

    return [
        f"Torch {torch.__version__} has not been tested with coremltools {coremltools.__version__} (newest tested: "
        f"{COREMLTOOLS_TESTED_TORCH}); results are real, but report odd failures with both versions."
    ]


def is_version_warning(line: str) -> bool:
    """A library's 'version X has not been tested with …' line: the same for every run on this machine, so the
    Model page says it once and result cards keep it among the notes instead of repeating it as a warning."""
    return _UNTESTED in line.lower()


def split_library_warnings(
    notes: list[str] | tuple[str, ...] | None, *, versions: bool = True
) -> tuple[list[str], list[str]]:
    """(library warnings that matter, every other note), each once and in order, for the result card.
    `versions=False` counts untested-version lines (is_version_warning) among the other notes."""
    warnings_, others = [], []
    for note in dict.fromkeys(notes or []):
        warning = is_library_warning(note) and (versions or not is_version_warning(note))
        (warnings_ if warning else others).append(note)
    return warnings_, others


@contextlib.contextmanager
def captured_library_output(notes: list[str]) -> Iterator[None]:
    """Run library code with its warnings, stdout/stderr chatter captured into `notes` (each line once)."""
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        warnings.simplefilter("always")
        try:
            yield
        finally:
            seen = set(notes)
            lines = [str(w.message).strip().splitlines()[0] for w in caught if str(w.message).strip()]
            for stream in (out, err):
                lines += [ln.strip() for ln in stream.getvalue().splitlines() if ln.strip() and "it/s]" not in ln and "%|" not in ln]
            for line in lines:
                line = line[:300]
                if line in seen:
                    continue
                seen.add(line)
                notes.append(line)


@contextlib.contextmanager
def library_notes_into(notes: list[str]) -> Iterator[None]:
    """captured_library_output for a record's notes: every line once (deprecation notices included: the result
    card lists them apart from the other notes)."""
    captured: list[str] = []
    try:
        with captured_library_output(captured):
            yield
    finally:
        notes.extend(line for line in captured if line not in notes)
