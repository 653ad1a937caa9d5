"""What every handler gets besides the module: the loaded model, its data, progress, notes and log capture."""

from __future__ import annotations

import contextlib
import logging
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
    def library_logging(self) -> Iterator[list[str]]:
        """Collect coremltools' per-layer log messages (why a layer was skipped) without printing them."""
        with capture_library_logs() as records:
            try:
                yield records
            finally:
                self.library_log.extend(records)


@contextlib.contextmanager
def capture_library_logs(prefix: str = "coremltools") -> Iterator[list[str]]:
    """Route every `prefix*` logger (some, like coremltools.optimize.torch, carry their own stderr handler and do
    not propagate) into a list for the duration, INFO and up; restore them afterwards."""
    records: list[str] = []
    handler = _ListHandler(records)
    loggers = [logging.getLogger(prefix)] + [
        logger
        for name, logger in logging.root.manager.loggerDict.items()
        if name.startswith(prefix + ".") and isinstance(logger, logging.Logger) and (logger.handlers or not logger.propagate)
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


class _ListHandler(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(level=logging.INFO)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.append(record.getMessage())
        except Exception:  # a badly formatted library log line must not break compression
            self.sink.append(str(record.msg))
