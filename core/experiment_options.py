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


def default_latency_settings(input_shape: tuple[int, ...]) -> LatencySettings:
    """Batch 1 and a larger batch; 224×224 models get a smaller large batch and more time per batch size."""
    threads = max(1, min(2, os.cpu_count() or 1))
    pixels = int(np.prod(input_shape[1:])) if len(input_shape) >= 2 else 1
    if pixels > 64 * 64:
        return LatencySettings(threads=threads, batch_sizes=(1, 8), seconds_per_batch_size=4.0, min_repeats=5)
    return LatencySettings(threads=threads, batch_sizes=(1, 32), seconds_per_batch_size=2.0)


@dataclass(frozen=True)
class ExperimentOptions:
    """Knobs of the measurement (the compression itself is fully described by the spec)."""

    eval_limit: int | None = None  # evaluate the first N test images (None: all)
    eval_batch_size: int = 256
    synthetic_eval_images: int = 64  # models without a dataset are compared on this many random inputs
    latency: LatencySettings | None = None  # None: default_latency_settings(model input shape)
    measure_latency: bool = True
    measure_memory: bool = True
    export: bool = True  # write the real artifact (.mlpackage / TorchScript) and the fp16 baseline package
    # int8 results: time the exported, frozen TorchScript file instead of the converted module. Off by default so the
    # A/B compares like with like (both Python-dispatched modules); the benchmark shows the frozen forms side by side.
    time_artifact: bool = False
    flipped_limit: int = 1000  # at most this many flipped images are listed (the count is always exact)
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

    def latency_settings(self, input_shape: tuple[int, ...]) -> LatencySettings:
        return self.latency or default_latency_settings(input_shape)

    def cache_root(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir is not None else cache_dir()
