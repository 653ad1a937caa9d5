"""Graph-form models — a torch.export program (.pt2), a TorchScript file, an ONNX file — as lifted nn.Modules.

Each form becomes an fx.GraphModule whose convolution / linear calls are real ``nn.Conv2d`` / ``nn.Linear``
layers (core.models.lifting), so every compression handler and the Core ML export apply unchanged:

- .pt2: ``ExportedProgram.module()`` → lifting. Program files are loaded and probed first in a limited child
  process (core.models.torchscript_probe), as TorchScript is.
- TorchScript: torch's TorchScript → ExportedProgram converter, then the same lifting. Where it fails the file
  still loads as TorchScript (baseline accuracy, size and latency work) and every method is refused with the
  converter's error (core.compress.applicability).
- ONNX: ``onnx2torch.convert`` (Conv → Conv2d, Gemm → Linear), then the lifting of MatMul with a stored weight.

A program exported with a fixed batch size has that size in its guards and sometimes in its reshapes. The guards
are dropped by lifting; a graph that still only runs at its batch size is wrapped in ``FixedBatchGraph``, which
evaluates any batch in slices of that size.
"""

from __future__ import annotations

import contextlib
import re
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import fx, nn

from core.models.errors import ModelLoadError
from core.models.lifting import LiftReport, lift_graph_module
from core.models.loaded import FASHION_MNIST, IMAGENET_MEAN, IMAGENET_STD, LoadedModel

if TYPE_CHECKING:
    from core.models.torchscript_probe import ProbeLimits

FORM_LABELS = {"torchscript": "TorchScript", "exported": "torch.export program", "onnx": "ONNX"}
GRAPH_FIX = "export it with torch.export (.pt2), or upload a state_dict for a listed architecture"


class FixedBatchGraph(nn.Module):
    """A graph that only runs at the batch size it was exported with, evaluated on any batch in slices of it."""

    def __init__(self, program: nn.Module, batch: int) -> None:
        super().__init__()
        # not "graph": a traced module's .graph is its TorchScript graph, which ct.convert would find instead
        self.program = program
        self.batch = int(batch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for start in range(0, x.shape[0], self.batch):
            chunk = x[start : start + self.batch]
            short = self.batch - chunk.shape[0]
            if short:  # the last slice is padded to the fixed size; the padding's rows are dropped
                chunk = torch.cat([chunk, chunk.new_zeros((short, *chunk.shape[1:]))])
            out = self.program(chunk)
            outputs.append(out[: self.batch - short] if short else out)
        return torch.cat(outputs)


# --------------------------------------------------------------------------- torch.export programs


def lift_program(program: torch.export.ExportedProgram) -> tuple[fx.GraphModule, LiftReport]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lift_graph_module(program.module())


def _batch_flexible(module: nn.Module, input_shape: tuple[int, int, int], batch: int | None) -> nn.Module:
    """`module` when it runs any batch size (checked against slices of its fixed size), else a FixedBatchGraph."""
    if batch is None:
        return module
    sliced = FixedBatchGraph(module, batch)
    x = torch.randn((batch + 1, *input_shape), generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            together, expected = module(x), sliced(x)
        if together.shape == expected.shape and torch.allclose(together, expected, rtol=1e-4, atol=1e-5):
            return module
    except Exception:  # a reshape baked to the export's batch size: evaluate in slices of that size
        pass
    return sliced


def load_exported(path: Path, *, limits: ProbeLimits | None = None, server_address: str | None = None) -> LoadedModel:
    """A torch.export program: probed in the limited child process first, then loaded and lifted here."""
    from core.models.torchscript_probe import probe_program, torchscript_disabled_message, torchscript_uploads_allowed

    path = Path(path)
    if not torchscript_uploads_allowed(server_address):
        raise ModelLoadError(torchscript_disabled_message())
    _require_archive(path, "a torch.export program", "torch.export.save")
    _refuse_torchscript_archive(path)
    probe = probe_program(path, kind="exported", limits=limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(str(path))
    except Exception as exc:  # it loaded in the child; only a changed file or environment gets here
        raise ModelLoadError(f"{path.name} could not be loaded ({_first_line(exc)}).") from None
    module, report = lift_program(program)
    module = _batch_flexible(module, probe.input_shape, probe.batch)
    return graph_model(
        source_id=f"export:{path}", label=f"Exported {path.name}", module=module, form="exported",
        input_shape=probe.input_shape, num_classes=probe.num_classes,
        manifest={"lifting": report.to_dict(), "batch": probe.batch},
    )


def _require_archive(path: Path, what: str, how: str) -> None:
    if not path.is_file():
        raise ModelLoadError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path.name} is empty (0 bytes); upload the file again.")
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path.name} is not {what} (not a zip archive); save it with {how}.")


def _refuse_torchscript_archive(path: Path) -> None:
    from core.library_internals import is_torchscript_archive

    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if is_torchscript_archive(names):
        raise ModelLoadError(f"{path.name} is a TorchScript file, not a torch.export program: load it as TorchScript.")


# --------------------------------------------------------------------------- TorchScript


def torchscript_graph(
    script: torch.jit.ScriptModule, input_shape: tuple[int, int, int]
) -> tuple[nn.Module | None, LiftReport | None, str | None]:
    """(lifted module, report, None), or (None, None, why) when torch's converter cannot turn it into a program.

    Converted with a batch of 2 first (the converter keeps the batch dynamic then), else with a batch of 1."""
    from core.library_internals import torchscript_to_exported

    errors = []
    for batch in (2, 1):
        example = torch.randn((batch, *input_shape), generator=torch.Generator().manual_seed(0))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torchscript_to_exported(script, (example,))
                module, report = lift_program(program)
        except Exception as exc:  # the converter fails in many ways; its first line is the reason
            errors.append(_first_line(exc))
            continue
        fixed = None if _runs_batch(module, input_shape, 3) else batch
        module = _batch_flexible(module, input_shape, fixed)
        mismatch = _outputs_differ(script, module, input_shape)
        if mismatch:
            errors.append(mismatch)
            continue
        return module, report, None
    if "data-dependent" in errors[0]:
        return None, None, ("torch's TorchScript → torch.export converter cannot follow this graph: it computes sizes "
                            "from tensor values (aten::Int of a traced size, e.g. Swin's window padding)")
    return None, None, f"torch's TorchScript → torch.export converter failed ({errors[0]})"


def _runs_batch(module: nn.Module, input_shape: tuple[int, int, int], batch: int) -> bool:
    try:
        with torch.no_grad():
            return module(torch.zeros(batch, *input_shape)).shape[0] == batch
    except Exception:
        return False


def _outputs_differ(reference: nn.Module, module: nn.Module, input_shape: tuple[int, int, int]) -> str | None:
    """Why the converted graph is not the file's model (its outputs on 2 random images differ), else None."""
    x = torch.randn((2, *input_shape), generator=torch.Generator().manual_seed(1))  # the probe ran batches of 2
    try:
        with torch.no_grad():
            expected, got = reference(x), module(x)
    except Exception as exc:  # the converted graph fails where the file's model ran
        return f"the converted graph fails on a batch of 2 ({_first_line(exc)})"
    scale = float(expected.abs().max()) or 1.0
    diff = float((expected - got).abs().max())
    return None if diff <= 1e-4 * scale + 1e-5 else f"the converted graph's outputs differ from the file's by {diff:.3g}"


# --------------------------------------------------------------------------- ONNX


def load_onnx(path: Path) -> LoadedModel:
    """An ONNX file (protobuf: parsed, never executed) converted by onnx2torch and lifted."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path.name} is empty (0 bytes); upload the file again.")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf decode errors have several types
        raise ModelLoadError(f"{path.name} is not an ONNX model ({_first_line(exc)[:120]}); export one with "
                             "torch.onnx.export.") from None
    if not model.graph.node:
        raise ModelLoadError(f"{path.name} is not an ONNX model (it has no graph nodes); export one with torch.onnx.export.")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise ModelLoadError(f"{path.name} keeps its weights in separate files; save it as one file "
                             "(onnx.save(model, path, save_as_external_data=False)).")
    module = _onnx_to_torch(model, path.name)
    shape = _onnx_input_shape(model, path.name)
    module, report = lift_graph_module(module)
    input_shape, num_classes = _probe_scores(module, shape, path.name)
    module = _batch_flexible(module, input_shape, _onnx_batch(model))
    return graph_model(
        source_id=f"onnx:{path}", label=f"ONNX {path.name}", module=module, form="onnx", input_shape=input_shape,
        num_classes=num_classes, manifest={"lifting": report.to_dict(), "opset": _opset(model)},
    )


def _opset(model) -> int | None:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


ONNX_FALLBACK_OPSET = 17  # onnx2torch has converters for every standard operator version up to here


def _onnx_to_torch(model, name: str) -> fx.GraphModule:
    """onnx2torch's graph; a model of a newer opset whose operator versions onnx2torch lacks (Identity-19, …) is
    converted to opset 17 with onnx's version converter first. An operator it still lacks is named."""
    try:
        return _onnx2torch(model)
    except NotImplementedError as exc:
        first_error = exc
    opset = _opset(model)
    if opset and opset > ONNX_FALLBACK_OPSET:
        from onnx import version_converter

        try:
            return _onnx2torch(version_converter.convert_version(model, ONNX_FALLBACK_OPSET))
        except Exception:  # the downgrade itself or the converter failed: report the original operator
            pass
    found = re.search(r"operation_type='([^']*)', version=(\d+)", str(first_error))
    if found:
        raise ModelLoadError(
            f"{name} uses the ONNX operator {found.group(1)} (opset {found.group(2)}), which the ONNX → PyTorch "
            "converter (onnx2torch) does not support; export the model with another opset or without that "
            "operator, or upload it as a torch.export .pt2 / a state_dict."
        ) from None
    raise ModelLoadError(f"{name} could not be converted from ONNX ({_first_line(first_error)}).") from None


# Operators whose versions after opset 18 only add element types (float8, int4, …): onnx2torch's converter for the
# opset-18 version converts them exactly for the float models this app loads.
TYPE_ONLY_UPDATES = ("Identity", "Constant", "Reshape", "Cast", "Shape", "Size", "Flatten", "Transpose", "Squeeze",
                     "Unsqueeze", "ConstantOfShape", "Equal")


def _register_type_only_updates() -> None:
    """onnx2torch knows most operators up to opset ~16; torch.onnx.export writes opset 20, whose Identity,
    Constant, Reshape… are newer versions of the same operators. Register onnx2torch's opset-18 converter for
    those versions through its converter API, so such files convert; other operators are still named when missing."""
    from onnx import defs
    from onnx2torch.node_converters.registry import add_converter, get_converter

    for op in TYPE_ONLY_UPDATES:
        try:
            converter = get_converter(operation_type=op, version=18)
        except NotImplementedError:
            continue
        newer = {defs.get_schema(op, max_inclusive_version=v).since_version
                 for v in range(19, defs.onnx_opset_version() + 1)} - {defs.get_schema(op, max_inclusive_version=18).since_version}
        for version in sorted(newer):
            with contextlib.suppress(ValueError):  # already registered (an earlier call, or a newer onnx2torch)
                add_converter(operation_type=op, version=version)(converter)


def _inline_identity_initializers(model) -> None:
    """torch.onnx.export shares equal weights through Identity nodes on one initializer; onnx2torch reads a Conv /
    Gemm weight only from an initializer, so each such Identity output becomes an initializer of its own."""
    from onnx import numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type == "Identity" and len(node.input) == 1 and node.input[0] in initializers:
            copy = numpy_helper.from_array(numpy_helper.to_array(initializers[node.input[0]]), name=node.output[0])
            model.graph.initializer.append(copy)
        else:
            keep.append(node)
    if len(keep) != len(model.graph.node):
        del model.graph.node[:]
        model.graph.node.extend(keep)


def _onnx2torch(model) -> fx.GraphModule:
    from onnx2torch import convert

    _register_type_only_updates()
    _inline_identity_initializers(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = convert(model)
        _layer_norms_sized_by_their_scale(module)
        return module
    except NotImplementedError:
        raise
    except Exception as exc:  # onnx2torch raises KeyError / ValueError / RuntimeError for malformed graphs
        raise ModelLoadError(f"the ONNX graph could not be converted ({type(exc).__name__}: {_first_line(exc)}).") from None


def _layer_norms_sized_by_their_scale(module: nn.Module) -> None:
    """onnx2torch sizes a LayerNormalization from its input's inferred shape, which is 0 where a dimension is only
    known at run time (Swin's patch merging); the ONNX spec makes the scale's shape the normalized shape."""
    for layer in module.modules():
        if isinstance(layer, nn.LayerNorm) and layer.weight is not None and (
            tuple(layer.normalized_shape) != tuple(layer.weight.shape)
        ):
            layer.normalized_shape = tuple(layer.weight.shape)


def _onnx_inputs(model) -> list:
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def _onnx_input_shape(model, name: str) -> tuple[int, int, int] | None:
    inputs = _onnx_inputs(model)
    if len(inputs) != 1:
        raise ModelLoadError(f"{name} has {len(inputs)} inputs; this app needs a model with one N×C×H×W image input.")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise ModelLoadError(f"{name}'s input has {len(dims)} dimension(s); this app needs an N×C×H×W image batch.")
    return (dims[1], dims[2], dims[3]) if all(dims[1:]) else None


def _onnx_batch(model) -> int | None:
    first = _onnx_inputs(model)[0].type.tensor_type.shape.dim[0]
    return int(first.dim_value) if first.HasField("dim_value") and first.dim_value > 0 else None


def _probe_scores(module: nn.Module, shape: tuple[int, int, int] | None, name: str) -> tuple[tuple[int, int, int], int]:
    from core.models.torchscript_probe import PROBE_SHAPES, scores_problem

    for candidate in [shape] if shape else list(PROBE_SHAPES):
        try:
            with torch.no_grad():
                out = module(torch.zeros(1, *candidate))
        except Exception as exc:
            if shape:
                raise ModelLoadError(f"{name} failed on a zero image of {'×'.join(map(str, shape))} ({_first_line(exc)}).") from None
            continue
        problem = scores_problem(out, batch=1, shape=candidate, name=name)
        if problem:
            raise ModelLoadError(problem)
        return candidate, int(out.shape[1])
    raise ModelLoadError(f"{name} did not accept any known input size; export it with a fixed C×H×W input.")


# --------------------------------------------------------------------------- shared


def graph_model(
    *, source_id: str, label: str, module: nn.Module, form: str, input_shape: tuple[int, int, int], num_classes: int,
    manifest: dict, is_torchscript: bool = False,
) -> LoadedModel:
    """A LoadedModel for a graph form: Fashion-MNIST for 1×28×28 with 10 classes, ImageNet statistics for RGB."""
    from core.fashion_mnist import FASHION_MNIST_CLASSES, FASHION_MNIST_MEAN, FASHION_MNIST_STD

    is_fashion = input_shape == (1, 28, 28) and num_classes == 10
    channels = input_shape[0]
    return LoadedModel(
        source_id=source_id,
        label=label,
        module=module.eval(),
        architecture=form,
        input_shape=input_shape,
        mean=FASHION_MNIST_MEAN if is_fashion else (IMAGENET_MEAN if channels == 3 else (0.5,) * channels),
        std=FASHION_MNIST_STD if is_fashion else (IMAGENET_STD if channels == 3 else (0.5,) * channels),
        num_classes=num_classes,
        dataset=FASHION_MNIST if is_fashion else None,
        accuracy_meaningful=is_fashion,
        weights_note=f"{FORM_LABELS[form]} upload" + ("; evaluated on Fashion-MNIST (1×28×28, 10 outputs)" if is_fashion else ""),
        class_names=FASHION_MNIST_CLASSES if is_fashion else None,
        is_torchscript=is_torchscript,
        manifest=manifest,
        form=form,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
