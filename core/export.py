"""Real artifacts on disk: Core ML .mlpackage (iOS18 mlprogram) that keeps the compression, and TorchScript.

Compressed PyTorch models from coremltools.optimize.torch carry their compression as metadata buffers
(``_COREML_/weight/lut``, ``…/quantization_scale``, ``…/compression_type``); ``ct.convert`` reads them from the
traced model and writes LUT / quantized / sparse weights into the file, so the package size is the compressed size.
An uploaded .mlpackage can be compressed on the Core ML side with coremltools.optimize.coreml.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.compress.context import CompressionError, capture_library_logs
from core.compress.registry import ARTIFACT_TORCHSCRIPT, METHODS, method_descriptor
from core.compress.result import CompressionResult
from core.library_internals import coreml_casts_accept_length_one_constants
from core.measure.size import path_size_bytes
from core.models.sources import LoadedModel
from core.progress import Progress, as_progress, captured_library_output, is_library_warning, quiet_libraries
from core.safe_zip import DEFAULT_LIMITS, UnsafeZipError, ZipLimits, extract_zip
from core.specs import AnySpec, PipelineSpec

INPUT_NAME = "input"


class ExportError(ValueError):
    """An artifact could not be written; the message says why."""


def _traced(module: nn.Module, input_shape: tuple[int, ...]) -> torch.jit.ScriptModule:
    if isinstance(module, torch.jit.ScriptModule):  # a TorchScript upload is already a graph
        return module.eval()
    example = torch.randn((1, *input_shape), generator=torch.Generator().manual_seed(0))
    module = module.eval()
    # nn.MultiheadAttention's inference fast path traces to one fused aten::_native_multi_head_attention, which
    # ct.convert has no converter for (ViT); the standard path traces to matmuls and softmax it converts.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            return torch.jit.trace(module, example, check_trace=False)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _convert(
    module: nn.Module, *, input_shape: tuple[int, ...], path: Path, progress: Progress | None, label: str
) -> Path:
    import coremltools as ct

    progress = as_progress(progress)
    quiet_libraries()
    coreml_casts_accept_length_one_constants()  # traced shape arithmetic (ShuffleNet, ViT) under NumPy >= 2.4
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise ExportError(f"a Core ML package path must end in .mlpackage; got {path.name}.")
    progress.update(0.05, f"{label}: tracing")
    notes: list[str] = []
    with captured_library_output(notes), capture_library_logs():
        traced = _traced(module, input_shape)
        progress.update(0.2, f"{label}: converting to Core ML (iOS18 mlprogram)")
        try:
            mlmodel = ct.convert(
                traced,
                inputs=[ct.TensorType(name=INPUT_NAME, shape=(1, *input_shape))],
                convert_to="mlprogram",
                minimum_deployment_target=ct.target.iOS18,
                compute_precision=ct.precision.FLOAT16,
                skip_model_load=True,  # Core ML cannot load/compile models on Linux; the file is what we need
            )
        except Exception as exc:  # converter errors come in many types
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"Core ML conversion failed: {first}") from exc
        progress.update(0.9, f"{label}: saving")
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        mlmodel.save(str(path))
    progress.update(1.0, f"{label}: {path_size_bytes(path) / 1e6:.2f} MB")
    return path


def export_coreml(*, module: nn.Module, input_shape: tuple[int, ...], path: Path, progress: Progress | None = None) -> Path:
    """The compressed model as an .mlpackage; compression metadata becomes LUT / quantized / sparse weights."""
    return _convert(module, input_shape=input_shape, path=path, progress=progress, label="Core ML export")


def export_coreml_baseline(*, model: LoadedModel, path: Path, progress: Progress | None = None) -> Path:
    """The uncompressed model as an fp16 .mlpackage (the size every ratio is measured against)."""
    return _convert(model.module, input_shape=model.input_shape, path=path, progress=progress, label="fp16 baseline export")


def export_torchscript(*, module: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
    """A traced TorchScript file (torch_static / torch_dynamic int8 modules serialise with their packed weights)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    with captured_library_output(notes):
        traced = _traced(module, input_shape)
        torch.jit.save(traced, str(path))
    return path


def artifact_for(
    result: CompressionResult, *, input_shape: tuple[int, ...], out_dir: Path, progress: Progress | None = None
) -> tuple[Path, str]:
    """Write the artifact a result is measured by: TorchScript for torch.ao results, .mlpackage otherwise."""
    out_dir = Path(out_dir)
    methods = [s.method for s in result.spec.steps] if isinstance(result.spec, PipelineSpec) else [result.spec.method]
    if any(method_descriptor(m).artifact_kind == ARTIFACT_TORCHSCRIPT for m in methods):
        path, kind = export_torchscript(module=result.module, input_shape=input_shape, path=out_dir / "model.pt"), "torchscript"
        as_progress(progress).update(1.0, f"TorchScript: {path_size_bytes(path) / 1e6:.2f} MB")
    else:
        path = export_coreml(module=result.module, input_shape=input_shape, path=out_dir / "model.mlpackage", progress=progress)
        kind = "mlpackage"
    result.artifact_path, result.artifact_kind = path, kind
    return path, kind


# --------------------------------------------------------------------------- Core ML-side compression


def _open_mlpackage(
    path: Path, *, extract_to: Path | None = None, zip_limits: ZipLimits = DEFAULT_LIMITS
) -> tuple[Path, Path | None]:
    """An .mlpackage directory, or a .zip holding one, checked and extracted by core.safe_zip (caps on size, entry
    count, nesting; no traversal, no links). Returns (package folder, folder to remove afterwards or None).

    The zip goes into `extract_to` (a folder the caller owns, e.g. a store staging folder; must be empty or
    missing) or, without one, into a temporary folder. On failure nothing extracted stays behind.
    """
    path = Path(path)
    if path.is_dir() and path.suffix == ".mlpackage":
        return path, None
    if path.is_file() and zipfile.is_zipfile(path):
        target = Path(extract_to) if extract_to is not None else Path(tempfile.mkdtemp(prefix="cs_mlpackage_"))
        try:
            extract_zip(path, into=target, limits=zip_limits)
        except UnsafeZipError as exc:
            shutil.rmtree(target, ignore_errors=True)
            raise ExportError(str(exc)) from None
        found = sorted(p for p in target.rglob("*.mlpackage") if p.is_dir())
        if not found:
            shutil.rmtree(target, ignore_errors=True)
            raise ExportError(f"{path.name} holds no .mlpackage folder; zip the whole <name>.mlpackage directory.")
        return found[0], target
    raise ExportError(f"{path.name} is neither an .mlpackage folder nor a .zip of one.")


def _op_config(spec, *, cto):
    """The Core ML-side config of one step, from its method's descriptor (the same fields the recipe shows)."""
    if spec.workflow != "data_free":
        raise CompressionError(
            f"Core ML-side compression is data-free only (no PyTorch model to calibrate or fine-tune); "
            f"{spec.method} with workflow {spec.workflow} needs the PyTorch model."
        )
    side = method_descriptor(spec.method).coreml_side
    if side is None:
        offered = ", ".join(name for name, d in METHODS.items() if d.coreml_side is not None)
        raise CompressionError(
            f"{spec.method} cannot run on an .mlpackage: Core ML-side compression offers {offered} "
            "(activation quantization needs Core ML predictions, which do not run on Linux)."
        )
    return cto.OptimizationConfig.from_dict({"config_type": side.config_type, "global_config": side.op_config(spec)})


def compress_mlpackage(
    *,
    path: Path,
    spec: AnySpec,
    out_path: Path,
    progress: Progress | None = None,
    extract_to: Path | None = None,
    zip_limits: ZipLimits = DEFAULT_LIMITS,
) -> dict:
    """Compress an uploaded .mlpackage (or .zip of one) with coremltools.optimize.coreml.

    A zip is extracted into `extract_to` (see `_open_mlpackage`) and removed again when done, whatever happens.
    Returns sizes and per-weight metadata. Accuracy is not available: Core ML predictions do not run on Linux.
    """
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    progress = as_progress(progress)
    quiet_libraries()
    steps = list(spec.steps) if isinstance(spec, PipelineSpec) else [spec]
    configs = [_op_config(step, cto=cto) for step in steps]
    source, tmp = _open_mlpackage(Path(path), extract_to=extract_to, zip_limits=zip_limits)
    notes: list[str] = []
    try:
        with captured_library_output(notes), capture_library_logs() as log:
            progress.update(0.1, "loading the .mlpackage")
            try:
                mlmodel = ct.models.MLModel(str(source), skip_model_load=True)
            except Exception as exc:
                raise ExportError(f"{source.name} is not a readable Core ML package ({str(exc)[:200]}).") from exc
            if mlmodel.get_spec().WhichOneof("Type") != "mlProgram":
                raise ExportError("only ML Program (.mlpackage) models can be compressed; re-convert with convert_to='mlprogram'.")
            before = _weights_metadata(mlmodel)
            for index, (step, config) in enumerate(zip(steps, configs, strict=True)):
                progress.update(0.2 + 0.6 * index / len(steps), f"Core ML-side {step.method}")
                apply = getattr(cto, method_descriptor(step.method).coreml_side.function)
                mlmodel = apply(mlmodel, config, joint_compression=index > 0)
            out_path = Path(out_path)
            if out_path.exists():
                shutil.rmtree(out_path) if out_path.is_dir() else out_path.unlink()
            out_path.parent.mkdir(parents=True, exist_ok=True)
            mlmodel.save(str(out_path))
            after = _weights_metadata(ct.models.MLModel(str(out_path), skip_model_load=True))
        progress.update(1.0, "compressed on the Core ML side")
        return {
            "size_bytes": path_size_bytes(out_path),
            "original_size_bytes": path_size_bytes(source),
            "artifact_path": str(out_path),
            "weights_before": before,
            "weights": after,
            "accuracy_available": False,
            "notes": [
                "Accuracy is not available: Core ML predictions do not run on Linux; only size and weight "
                "statistics are measured.",
                *dict.fromkeys(
                    line
                    for line in notes + log
                    if not line.startswith(("Running MIL", "Implicitly cleaning up"))
                    and ("kip" in line or "annot" in line or "an't" in line or "arning" in line
                         or is_library_warning(line))
                ),
            ],
        }
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _weights_metadata(mlmodel) -> list[dict]:
    """Per const weight: shape, sparsity, unique values and the op consuming it (constexpr_* when compressed)."""
    from coremltools.optimize.coreml import get_weights_metadata

    rows = []
    for name, meta in get_weights_metadata(mlmodel, weight_threshold=0).items():
        value = np.asarray(meta.val)
        consumers = sorted({op.op_type for op in meta.child_ops}) if meta.child_ops else []
        compressed_part = any(c.startswith("constexpr") for c in consumers)
        if not (compressed_part or np.issubdtype(value.dtype, np.floating)):
            continue  # integer op attributes (pads, strides, shapes) are not weights
        rows.append(
            {
                "name": name,
                "shape": list(value.shape),
                "params": int(value.size),
                "dtype": str(value.dtype),
                "sparsity": float(meta.sparsity),
                "unique_values": int(meta.unique_values),
                "consumers": consumers,
                "role": _role(name, consumers),
            }
        )
    return rows


def _role(name: str, consumers: list[str]) -> str:
    """What a stored const is: a dense fp16 weight, or one part of a compressed weight."""
    if not any(c.startswith("constexpr") for c in consumers):
        return "dense"
    for suffix, role in (("mask", "sparsity mask"), ("nonzero_data", "non-zero values"), ("lut", "LUT"),
                         ("indices", "LUT indices"), ("scale", "scales"), ("offset", "zero points")):
        if suffix in name:
            return role
    return "compressed data"
