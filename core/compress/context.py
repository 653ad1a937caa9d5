"""What every handler gets besides the module: the loaded model, its data, progress, notes and log capture."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from core.data import Dataset, synthetic_inputs
from core.models.sources import LoadedModel
from core.progress import Progress


class CompressionError(ValueError):
    """A compression that cannot run as asked; the message says why and what to do instead."""


@dataclass
class CompressionContext:
    """Shared state of one `compress` call. `original` is the untouched input module (never modified)."""

    model: LoadedModel
    dataset: Dataset | None
    progress: Progress
    original: nn.Module
    notes: list[str] = field(default_factory=list)
    calibration_source: str | None = None
    # Pipelines: layer name → pruning mask (True = kept) from the previous step, so sparsity survives step 2.
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    # Compression kinds a previous pipeline step left in the metadata; they do not count as this step's work.
    inherited_kinds: frozenset[str] = frozenset()
    library_log: list[str] = field(default_factory=list)
    # A job's machine-wide timing lock (held only while something is timed) and its cache folder; None: none / default.
    timing_guard: Callable[[], AbstractContextManager] | None = None
    cache_root: Path | None = None

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    # ------------------------------------------------------------------ data
    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        return self.model.example_input(batch_size)

    def calibration_batches(self, *, samples: int, seed: int, batch_size: int = 32) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Normalised (inputs, labels) batches for calibration; labels are None for synthetic inputs."""
        if self.dataset is not None:
            split = self.dataset.calibration_split(size=samples, seed=seed)
            self.calibration_source = (
                f"{self.dataset.name} training pool ({len(split):,} class-balanced images, seed {seed})"
            )
            return list(self.dataset.batches(split, batch_size=batch_size))
        inputs = synthetic_inputs(input_shape=self.model.input_shape, count=samples, seed=seed, purpose="calibration")
        self.calibration_source = (
            f"synthetic inputs ({samples:,} standard-normal tensors of shape {'×'.join(map(str, self.model.input_shape))}); "
            "the model has no matching dataset, so this run is for size and latency only"
        )
        self.note(f"Calibrated on {self.calibration_source}.")
        return [(inputs[i : i + batch_size], None) for i in range(0, samples, batch_size)]

    def run_calibration(self, module: nn.Module, *, samples: int, seed: int, label: str) -> None:
        """Feed the calibration batches through `module` (its observers record activation ranges), with progress."""
        batches = self.calibration_batches(samples=samples, seed=seed)
        with torch.no_grad():
            for index, (inputs, _labels) in enumerate(batches):
                module(inputs)
                self.progress.update((index + 1) / len(batches), label)

    def require_training_data(self, what: str) -> Dataset:
        if self.dataset is None:
            raise CompressionError(
                f"{what} needs labelled training images, but {self.model.label} has no matching dataset "
                f"({self.model.weights_note}). Fine-tuning it on synthetic inputs would be meaningless: "
                "use the data_free or calibration workflow, or load a model that has a dataset."
            )
        return self.dataset

    # ------------------------------------------------------------------ library logging
    @contextlib.contextmanager
    def library_logging(self, *, layers: int | None = None) -> Iterator[list[str]]:
        """Collect coremltools' per-layer log messages (why a layer was skipped) without printing them.

        With `layers` (how many the library works on), the library's own "Progress: N %" lines — k-means logs one
        as each layer finishes — move this run's progress bar instead, so a large model shows progress per layer."""
        forward = None
        if layers:
            done = [0]

            def forward(_library_fraction: float) -> None:
                done[0] += 1
                self.progress.update(0.05 + 0.9 * done[0] / layers, f"k-means: {done[0]:,} of {layers:,} layers done")
        with capture_library_logs(on_progress=forward) as records:
            try:
                yield records
            finally:
                self.library_log.extend(records)


@contextlib.contextmanager
def capture_library_logs(
    prefix: str = "coremltools", *, on_progress: Callable[[float], None] | None = None
) -> Iterator[list[str]]:
    """Route every `prefix*` logger (some, like coremltools.optimize.torch, carry their own stderr handler and do
    not propagate) into a list for the duration, INFO and up; restore them afterwards. With `on_progress`, the
    library's "Progress: N %" lines go to it as a fraction instead of into the list."""
    records: list[str] = []
    handler = _ListHandler(records, on_progress=on_progress)
    loggers = [logging.getLogger(prefix)] + [
        logger
        for name, logger in logging.root.manager.loggerDict.items()
        if name.startswith(prefix + ".") and isinstance(logger, logging.Logger) and (logger.handlers or not logger.propagate)
    ]
    if on_progress is not None:
        # quiet_libraries() put every library logger at ERROR; the progress lines come from one of them at INFO
        loggers += [
            logger
            for name, logger in logging.root.manager.loggerDict.items()
            if name.startswith(prefix + ".") and isinstance(logger, logging.Logger) and logger not in loggers
            and logger.name.endswith("k_means")
        ]
    saved = [(logger, logger.level, logger.propagate, list(logger.handlers)) for logger in loggers]
    for logger in loggers:
        logger.handlers = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
    try:
        yield records
    finally:
        for logger, level, propagate, handlers in saved:
            logger.handlers = handlers
            logger.setLevel(level)
            logger.propagate = propagate


_LIBRARY_PROGRESS = re.compile(r"^Progress:\s*([\d.]+)\s*%")


class _ListHandler(logging.Handler):
    def __init__(self, sink: list[str], *, on_progress: Callable[[float], None] | None = None) -> None:
        super().__init__(level=logging.INFO)
        self.sink = sink
        self.on_progress = on_progress

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a badly formatted library log line must not break compression
            message = str(record.msg)
        found = _LIBRARY_PROGRESS.match(message) if self.on_progress is not None else None
        if found:
            self.on_progress(min(1.0, float(found.group(1)) / 100))
        else:
            self.sink.append(message)
