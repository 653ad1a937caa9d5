"""The compression engine: `compress(model=…, spec=…, dataset=…)` → a compressed copy plus a per-layer account.

`HANDLERS` maps each method to its handler ``(module_copy, spec, context) -> CompressionResult``; a pipeline
runs its steps through the same handlers. The input model is deep-copied first and never modified.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
from torch import nn

from core.compress.context import CompressionContext, CompressionError
from core.compress.palettize import palettize
from core.compress.pipeline import run_pipeline
from core.compress.prune import prune
from core.compress.quantize_activations import quantize_activations
from core.compress.quantize_weights import quantize_weights
from core.compress.result import CompressionResult, LayerReport
from core.compress.torch_quant import torch_dynamic, torch_static
from core.data import Dataset
from core.models.sources import LoadedModel
from core.progress import Cancelled, Progress, as_progress, captured_library_output, quiet_libraries
from core.specs import AnySpec, PipelineSpec, SpecError

Handler = Callable[[nn.Module, object, CompressionContext], CompressionResult]

HANDLERS: dict[str, Handler] = {
    "palettize": palettize,
    "quantize_weights": quantize_weights,
    "quantize_activations": quantize_activations,
    "prune": prune,
    "torch_dynamic": torch_dynamic,
    "torch_static": torch_static,
}

__all__ = ["HANDLERS", "CompressionError", "CompressionResult", "LayerReport", "compress"]


def compress(
    *, model: LoadedModel, spec: AnySpec, dataset: Dataset | None, progress: Progress | None = None
) -> CompressionResult:
    """Compress a copy of `model` as `spec` says. Raises CompressionError / SpecError with a clear reason."""
    progress = as_progress(progress)
    quiet_libraries()
    _check_inputs(model=model, spec=spec, dataset=dataset)
    progress.update(0.0, f"compressing: {spec.summary()}")
    working = copy.deepcopy(model.module).eval()
    context = CompressionContext(model=model, dataset=dataset, progress=progress, original=model.module)
    started = time.perf_counter()
    captured: list[str] = []
    seed = spec.steps[0].seed if isinstance(spec, PipelineSpec) else spec.seed
    with torch.random.fork_rng(devices=[]), captured_library_output(captured):
        torch.manual_seed(seed)
        try:
            if isinstance(spec, PipelineSpec):
                result = run_pipeline(working, spec, context, HANDLERS)
            else:
                result = HANDLERS[spec.method](working, spec, context)
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
    unknown = [m for m in methods if m not in HANDLERS]
    if unknown:
        raise CompressionError(f"no compression handler for {', '.join(unknown)}; known: {', '.join(HANDLERS)}.")
    if model.is_torchscript:
        if "torch_static" in methods:
            raise CompressionError(
                "torch_static needs the Python model: FX graph mode traces nn.Module code, which a TorchScript file "
                "does not have. Upload a state_dict for a listed architecture instead."
            )
        raise CompressionError(
            f"{methods[0]} cannot run on a TorchScript upload: coremltools.optimize.torch and torch.ao find "
            "Conv/Linear layers by their Python module type, which TorchScript hides. Upload a state_dict for a "
            "listed architecture, or convert the file to an .mlpackage and compress it on the Core ML side."
        )
    if dataset is not None and dataset.input_shape != tuple(model.input_shape):
        raise CompressionError(
            f"the dataset's images are {'×'.join(map(str, dataset.input_shape))} but {model.label} expects "
            f"{'×'.join(map(str, model.input_shape))}; pick the dataset the model was trained on."
        )
