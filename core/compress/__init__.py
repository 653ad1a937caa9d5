"""The compression engine: `compress(model=…, spec=…, dataset=…)` → a compressed copy plus a per-layer account.

Each method module registers one descriptor (``core.compress.registry``): its spec type, handler
``(module_copy, spec, context) -> CompressionResult``, library config, config snippet, storage model, latency note,
label and colour. Importing this package imports every module in it, so ``METHODS`` is complete; a pipeline runs
its steps through the same handlers. The input model is deep-copied first and never modified.
"""

from __future__ import annotations

import copy
import importlib
import pkgutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import torch

from core.compatibility import dataset_mismatch
from core.compress.applicability import spec_refusal, unlifted_notes
from core.compress.context import CompressionContext, CompressionError
from core.compress.registry import METHODS, MethodDescriptor, descriptor_for, method_descriptor, order_methods
from core.compress.result import CompressionResult, LayerReport
from core.data import Dataset
from core.models.sources import LoadedModel
from core.progress import Cancelled, Progress, as_progress, captured_library_output, quiet_libraries
from core.specs import SPEC_TYPES, AnySpec, PipelineSpec, SpecError

# Every module of this package is imported, so each method module registers its descriptor without being listed
# anywhere; the display order is the order of the spec types.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
order_methods(list(SPEC_TYPES))

__all__ = [
    "METHODS",
    "CompressionError",
    "CompressionResult",
    "LayerReport",
    "MethodDescriptor",
    "compress",
    "method_descriptor",
]


def compress(
    *,
    model: LoadedModel,
    spec: AnySpec,
    dataset: Dataset | None,
    progress: Progress | None = None,
    timing_guard: Callable[[], AbstractContextManager] | None = None,
    cache_root: Path | None = None,
) -> CompressionResult:
    """Compress a copy of `model` as `spec` says. Raises CompressionError / SpecError with a clear reason.

    `timing_guard` is held while a method times something on this machine (the int8 form race); `cache_root` is
    where such machine-specific choices are cached (default: ``core.paths.cache_dir()``).
    """
    progress = as_progress(progress)
    quiet_libraries()
    _check_inputs(model=model, spec=spec, dataset=dataset)
    progress.update(0.0, f"compressing: {spec.summary()}")
    working = copy.deepcopy(model.module).eval()
    context = CompressionContext(model=model, dataset=dataset, progress=progress, original=model.module,
                                 timing_guard=timing_guard, cache_root=cache_root)
    context.notes.extend(unlifted_notes(model=model))
    started = time.perf_counter()
    captured: list[str] = []
    seed = spec.steps[0].seed if isinstance(spec, PipelineSpec) else spec.seed
    with torch.random.fork_rng(devices=[]), captured_library_output(captured):
        torch.manual_seed(seed)
        try:
            result = descriptor_for(spec).handler(working, spec, context)
        except (Cancelled, CompressionError, SpecError):
            raise
        except Exception as exc:  # library failures become one clear line, cause kept in the chain
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise CompressionError(f"{spec.summary()} failed inside the compression library: {first}") from exc
    result.seconds = time.perf_counter() - started
    result.spec = spec
    result.calibration_source = result.calibration_source or context.calibration_source
    result.notes = context.notes + [line for line in captured if line not in context.notes]
    progress.update(1.0, f"compressed in {result.seconds:.1f} s")
    return result


def _check_inputs(*, model: LoadedModel, spec: AnySpec, dataset: Dataset | None) -> None:
    methods = [s.method for s in spec.steps] if isinstance(spec, PipelineSpec) else [spec.method]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise CompressionError(f"no compression handler for {', '.join(unknown)}; known: {', '.join(METHODS)}.")
    refusal = spec_refusal(model=model, spec=spec)
    if refusal:
        raise CompressionError(refusal)
    mismatch = dataset_mismatch(model=model, dataset=dataset) if dataset is not None else None
    if mismatch:
        raise CompressionError(mismatch)
