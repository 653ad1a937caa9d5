"""What every command of ``python -m core.cli`` shares: the exit statuses, the one-line error, the progress bar
on stderr, Ctrl-C handling and the ``--json FILE`` writer.

``core.cli`` (models / methods / baseline / run / jobs / cancel), ``core.explore.cli`` (sweep / search) and
``core.explore.sensitivity_cli`` (sensitivity / recipe) import this module; ``core.cli`` assembles the three
command sets into one parser, and no command module imports ``core.cli``.

Exit statuses, the same for every command: 0 done, 1 target missed (a search found no setting within its budget,
a sweep or job failed, a run whose exported artifact's weights differ from the evaluated ones), 2 bad input (one
line on stderr naming the problem), 3 internal error, 130 cancelled.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.progress import Progress, captured_library_output

EXIT_DONE = 0
EXIT_TARGET_MISSED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL_ERROR = 3  # a bug, not the input: the message says how to get the traceback
EXIT_CANCELLED = 130


class CliError(ValueError):
    """A command-line mistake (missing option, unreadable file); the message says what to pass instead."""


# --------------------------------------------------------------------------- progress on stderr


class ProgressBar:
    """A tqdm bar on stderr driven by Progress(fraction, message) callbacks.

    Created on the first real progress, so input that is refused up front leaves stderr with just its one line.
    """

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._bar = None
        self._file = sys.stderr  # the real stderr: library steps swap sys.stderr for a buffer while they run

    def __call__(self, fraction: float, message: str) -> None:
        if not self._enabled:
            return
        if self._bar is None:
            if fraction <= 0.0:
                return
            from tqdm import tqdm

            self._bar = tqdm(
                total=1000,
                file=self._file,
                disable=False,  # quiet_libraries() disables tqdm by default for library bars, not for ours
                bar_format="{percentage:3.0f}%|{bar:30}| {desc} [{elapsed}]",
                dynamic_ncols=True,
                leave=False,
                mininterval=0.2,
            )
        target = round(fraction * 1000)
        if target > self._bar.n:
            self._bar.update(target - self._bar.n)
        if message:
            self._bar.set_description_str(message[:70], refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@contextlib.contextmanager
def cancellable(progress: Progress) -> Iterator[None]:
    """First Ctrl-C asks the running step to stop at its next progress update; a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if progress.cancelled:
            raise KeyboardInterrupt
        progress.cancel()
        print("\ncancelling… (Ctrl-C again to stop immediately)", file=sys.__stderr__)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------------------- helpers


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def load_model(source_id: str, weights: str | None):  # -> LoadedModel
    from core.models.sources import load_model

    with captured_library_output([]):  # torch.jit.load's FutureWarning etc. would break the one-line contract
        return load_model(source_id, weights=Path(weights) if weights else None)


def write_json(path: str | None, result: Any) -> None:
    """Write a command's result (records in the store's schema, core.records) atomically; nothing without --json."""
    if not path:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, target)


def run_with_progress(args: argparse.Namespace, work):  # work(progress) -> dict
    bar = ProgressBar(enabled=not args.quiet)
    progress = Progress(bar)
    try:
        with cancellable(progress):
            return work(progress)
    finally:
        bar.close()


