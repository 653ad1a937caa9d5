"""The knobs of a measurement (how many images, latency settings, export on/off, cache folder).

The compression itself is fully described by the spec; these say how it is measured.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.measure.latency import LatencySettings
from core.paths import cache_dir

LARGE_BATCH_BIG_INPUTS = 8  # the large batch of models with inputs over 64×64 pixels (224×224: 8 images)
LARGE_BATCH_SMALL_INPUTS = 32


def default_latency_settings(input_shape: tuple[int, ...], *, large_batch: bool = False) -> LatencySettings:
    """Batch 1, plus a large batch where it is cheap or asked for.

    Small inputs (≤ 64×64 pixels) always also time a batch of 32: it costs a fraction of a second. Bigger inputs
    (224×224) time batch 1 only unless `large_batch`: their batch of 8 took over half of a resnet18 run (≈ 12 of
    27 s). Batch 1 keeps at least 3 s of interleaved A/B timing after warm-up and ≥ 5 repeats per model, so its
    median and p90 rest on dozens of calls.
    """
    threads = max(1, min(2, os.cpu_count() or 1))
    pixels = int(np.prod(input_shape[1:])) if len(input_shape) >= 2 else 1
    if pixels > 64 * 64:
        batches = (1, LARGE_BATCH_BIG_INPUTS) if large_batch else (1,)
        return LatencySettings(threads=threads, batch_sizes=batches, seconds_per_batch_size=3.0, min_repeats=5)
    return LatencySettings(threads=threads, batch_sizes=(1, LARGE_BATCH_SMALL_INPUTS), seconds_per_batch_size=2.0)


@dataclass(frozen=True)
class ExperimentOptions:
    """Knobs of the measurement (the compression itself is fully described by the spec)."""

    eval_limit: int | None = None  # evaluate the first N test images (None: all)
    eval_batch_size: int = 256
    synthetic_eval_images: int = 64  # models without a dataset are compared on this many random inputs
    latency: LatencySettings | None = None  # None: default_latency_settings(model input shape, large_batch)
    # Also time a batch of 8 for models with inputs over 64×64 pixels (slower: about twice the latency phase).
    # Ignored when `latency` is given; small inputs always time their batch of 32.
    large_batch: bool = False
    measure_latency: bool = True
    measure_memory: bool = True
    export: bool = True  # write the real artifact (.mlpackage / TorchScript) and the fp16 baseline package
    # int8 results: time the exported, frozen TorchScript file instead of the converted module. Off by default so the
    # A/B compares like with like (both Python-dispatched modules); the benchmark shows the frozen forms side by side.
    time_artifact: bool = False
    flipped_limit: int = 1000  # at most this many flipped images are listed (the count is always exact)
    # Also measure baseline and candidate on this many class-balanced images of the training pool (never test
    # images): what a search chooses its winner by, so the test images only confirm the choice. None: not measured.
    validation_images: int | None = None
    weights_sample: int = 50_000  # weight values per layer kept for histograms
    cache_dir: Path | None = None  # None: core.paths.cache_dir(); baseline logits and fp16 packages are cached there
    seed: int = 0
    # A candidate that runs the baseline's exact operations (palettized / weight-quantized / pruned weights stored
    # compressed, run decompressed) times and allocates like the baseline by construction: a short interleaved
    # confirmation instead of the full latency run (measured in full if it disagrees), the baseline's peak memory
    # reused. The record's notes say so. False: measure everything in full.
    skip_known: bool = True
    # Write the artifact (and a missing fp16 baseline package) on a helper thread while the main thread evaluates;
    # both are done before latency is timed, so timing never overlaps other work of the run.
    overlap_export: bool = True
    # A job runner's machine-wide timing lock: entered around the latency measurement only (other phases may run
    # beside other jobs). None: no lock (a run started outside the job runner).
    timing_guard: Callable[[], AbstractContextManager] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.eval_limit is not None and (isinstance(self.eval_limit, bool) or self.eval_limit < 1):
            raise ValueError(f"eval_limit must be a positive number of images; got {self.eval_limit!r}.")
        if self.eval_batch_size < 1 or self.synthetic_eval_images < 1:
            raise ValueError("eval_batch_size and synthetic_eval_images must be positive.")
        if self.validation_images is not None and (isinstance(self.validation_images, bool)
                                                   or not isinstance(self.validation_images, int)
                                                   or self.validation_images < 1):
            raise ValueError(f"validation_images must be a positive number of images; got {self.validation_images!r}.")

    def latency_settings(self, input_shape: tuple[int, ...]) -> LatencySettings:
        return self.latency or default_latency_settings(input_shape, large_batch=self.large_batch)

    def cache_root(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir is not None else cache_dir()
