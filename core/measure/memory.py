"""Peak memory of one inference, from the PyTorch profiler's allocation events (how the PyTorch ResNet-34
quantization report measured it).

The number is the high-water mark of bytes the CPU allocator held during one forward pass beyond what was
allocated before it started: activations and scratch buffers, not the weights (those are already resident).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator

import torch
from torch.profiler import ProfilerActivity, profile

from core.library_internals import profiler_memory_events

_PROFILER_NOISE = ("USDT:", "profiler_start", "profiler_stop", "gpuGetDeviceCount", "CUPTI", "Kineto")


@contextlib.contextmanager
def silenced_native_stderr(notes: list[str] | None = None) -> Iterator[None]:
    """The profiler's C++ side prints start/stop lines straight to fd 2; capture them (and keep real errors)."""
    # fd 2 itself, not sys.stderr: callers may have swapped sys.stderr for a StringIO (captured_library_output).
    stderr_fd = 2
    for stream in (sys.stderr, sys.__stderr__):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()
    saved = os.dup(stderr_fd)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), stderr_fd)
        try:
            yield
        finally:
            with contextlib.suppress(AttributeError, OSError, ValueError):
                sys.__stderr__.flush()
            os.dup2(saved, stderr_fd)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode(errors="replace")
            if notes is not None:
                for line in text.splitlines():
                    if line.strip() and not any(n in line for n in _PROFILER_NOISE):
                        notes.append(line.strip()[:300])


def peak_inference_memory_bytes(*, run: Callable[[torch.Tensor], object], inputs: torch.Tensor, notes: list[str] | None = None) -> int | None:
    """High-water mark of CPU bytes allocated during one call of `run(inputs)` (after one warm-up call).

    None when the profiler recorded no allocation events (some TorchScript paths allocate outside its view).
    """
    with torch.inference_mode():
        run(inputs)  # warm-up: lazy initialisation and packed-weight caches are not part of an inference
        with silenced_native_stderr(notes), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            run(inputs)
    memory_events = sorted(profiler_memory_events(prof), key=lambda event: event[0])  # by start time
    if not memory_events:
        return None
    live = peak = 0
    for _start_ns, nbytes in memory_events:
        live += nbytes
        peak = max(peak, live)
    return int(peak)
