"""The ONE place that touches private coremltools / PyTorch internals and undocumented file layouts.

The product relies on a few symbols that are not part of the libraries' public API (they carry a leading
underscore or are undocumented). Every such use goes through this module, so an upgrade that moves one breaks
here — and ``tests/test_library_internals.py`` names the symbol — instead of silently somewhere in the engine.
Pinned for coremltools 9.0 and torch 2.x; each adapter says what it is used for.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

# --------------------------------------------------------------------------- coremltools.optimize.torch metadata
# coremltools.optimize.torch stores compression as state_dict buffers ``_COREML_/<param>/<key>``; ct.convert reads
# them. The prefix, separator and the compression-type codes live in a private module.
from coremltools.optimize.torch._utils import metadata_utils as _metadata_utils
from torch import nn

CompressionMetadata = _metadata_utils.CompressionMetadata  # build / register per-parameter compression metadata
register_metadata_version = _metadata_utils.register_metadata_version  # the model-level version buffer ct.convert checks
METADATA_PREFIX: str = _metadata_utils.STATE_DICT_METADATA_BUFFER_PREFIX  # "_COREML_"
METADATA_SEPARATOR: str = _metadata_utils.BUFFER_NAME_SEPARATOR  # "/"
# code stored in the compression_type buffer → name ("pruning", "palettization", "quantization")
COMPRESSION_TYPES: dict[int, str] = {member.value: member.name for member in _metadata_utils.CompressionType}


def metadata_buffers(layer: nn.Module, param: str = "weight") -> dict[str, torch.Tensor]:
    """The ``_COREML_/<param>/<key>`` buffers coremltools registered on one layer, keyed by <key>."""
    prefix = f"{METADATA_PREFIX}{METADATA_SEPARATOR}{param}{METADATA_SEPARATOR}"
    return {
        name[len(prefix) :]: value
        for name, value in layer.named_buffers(recurse=False)
        if name.startswith(prefix) and value is not None
    }


# --------------------------------------------------------------------------- k-means and LUT routines
# Masked / importance-weighted k-means (prune → palettize keeps zeros; SKM sensitivities reused per layer).
from coremltools.optimize.torch._utils import k_means as _k_means  # noqa: E402

KMeansConfig = _k_means.KMeansConfig
SequentialKMeans = _k_means.SequentialKMeans

# The Core ML-side LUT routines (uniform / unique palettization) applied to PyTorch weights.
from coremltools.optimize.coreml import _quantization_passes as _coreml_passes  # noqa: E402

CoreMLPalettizePass = _coreml_passes.palettize_weights  # .grouped_channelwise_compress(...), .decompress(params)


# The mask rules of MagnitudePruner and the linear-quantization arithmetic of coremltools.optimize, exposed for the
# Learn pages (core.learn) so they show exactly what the library computes.
from coremltools.optimize import _utils as _optimize_utils  # noqa: E402
from coremltools.optimize.torch.pruning import _utils as _pruning_utils  # noqa: E402

magnitude_ranked_mask = _pruning_utils.magnitude_ranked_mask  # (weights, sparsity_fraction, block_size, granularity)
n_m_mask = _pruning_utils.n_m_mask  # (weights, (n, m), dim=1)
compute_qparams = _optimize_utils.compute_qparams  # (weight, nbits, signed, quantization_mode, dtype, block_sizes)
dequantize_by_scale_and_zp = _optimize_utils.dequantize_by_scale_and_zp  # (quantized_data, scale, zero_point, axis)


# The newest torch version this coremltools release was tested with (private; coremltools only logs a warning once,
# at import, which the app's log filters would hide): the record's notes say so when torch is newer.
from coremltools import _deps as _coremltools_deps  # noqa: E402

COREMLTOOLS_TESTED_TORCH: str | None = getattr(_coremltools_deps, "_TORCH_MAX_VERSION", None)


# --------------------------------------------------------------------------- reading a saved ML program back
def load_mil_program(package: Any) -> Any:
    """The MIL program (coremltools' Python ``Program``) of a saved .mlpackage, its weights read from weight.bin.

    ``coremltools.converters.mil.frontend.milproto.load`` is undocumented (it is what ``optimize.coreml`` uses to
    edit a saved model). Every ``const`` op's value is a numpy array; ``constexpr_*`` ops keep their inputs and
    expose ``decompress`` (a static method per op) to materialise the dense weight.
    """
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as load_milproto

    mlmodel = ct.models.MLModel(str(package), skip_model_load=True)
    spec = mlmodel.get_spec()
    return load_milproto(spec, specification_version=spec.specificationVersion, file_weights_dir=mlmodel.weights_dir)


# --------------------------------------------------------------------------- which layer types each API handles
def post_training_palettizer_modules() -> tuple[type[nn.Module], ...]:
    """Layer types PostTrainingPalettizer / SKMPalettizer palettize (a private class attribute)."""
    from coremltools.optimize.torch.palettization import PostTrainingPalettizer

    return tuple(PostTrainingPalettizer._supported_modules)


def dkm_palettizer_modules() -> tuple[type[nn.Module], ...]:
    """Layer types DKMPalettizer palettizes (a private registry module)."""
    from coremltools.optimize.torch.palettization._supported_modules import DKMPalettizerModulesRegistry

    return tuple(DKMPalettizerModulesRegistry.get_supported_modules())


def post_training_quantizer_modules() -> tuple[type[nn.Module], ...]:
    """Layer types PostTrainingQuantizer quantizes (a private class attribute)."""
    from coremltools.optimize.torch.quantization import PostTrainingQuantizer

    return tuple(PostTrainingQuantizer._supported_modules)


def magnitude_pruner_modules() -> tuple[type[nn.Module], ...]:
    """Layer types MagnitudePruner prunes (a private module constant)."""
    from coremltools.optimize.torch.pruning import magnitude_pruner

    return tuple(magnitude_pruner._SUPPORTED_MODULES)


def release_skm_tempdir(skm: Any) -> None:
    """SKMPalettizer keeps sensitivities and a model checkpoint in a private temp dir until garbage collection."""
    skm._tempdir.cleanup()


# --------------------------------------------------------------------------- torch
BatchNormBase: type[nn.Module] = nn.modules.batchnorm._BatchNorm  # every BatchNorm{1,2,3}d (private base class)

# coremltools' PT2E quantizer (CoreMLQuantizer) lives in a private module; core.compress.pt2e only probes whether it
# imports (in coremltools 9.0 it needs torch.ao.quantization.quantizer, which torch 2.10+ no longer has).
COREML_QUANTIZER_MODULE = "coremltools.optimize.torch.quantization._coreml_quantizer"

# An ATen operator overload (torch.ops.aten.conv2d.default, …): how a torch.export graph's call targets are told
# apart from Python functions (the class lives in the private torch._ops).
AtenOpOverload: type = torch._ops.OpOverload

# state_dict keys of torch.ao quantized Linear weights: "<layer>._packed_params._packed_params" (a private layout)
PACKED_PARAMS_SUFFIXES: tuple[str, ...] = ("._packed_params._packed_params", "._packed_params")
# the attribute a (scripted) torch.ao quantized layer keeps its packed int8 weight in (a ScriptObject, or a
# LinearPackedParams module holding one under the same name)
PACKED_PARAMS_ATTRIBUTE = "_packed_params"


def packed_params_class(packed: torch.ScriptObject) -> str:
    """'Conv2dPackedParamsBase', 'LinearPackedParamsBase' …: the class of a packed-weight object (its private
    ``_type()``), which says which ``torch.ops.quantized.*_unpack`` routine reads it."""
    return packed._type().qualified_name().rsplit(".", 1)[-1]


def profiler_memory_events(prof: Any) -> Iterator[tuple[int, int]]:
    """(start_ns, bytes) of every CPU allocator event a ``torch.profiler.profile(profile_memory=True)`` recorded.

    The public ``key_averages()`` only keeps per-operator totals; the ordered allocation stream (needed for a
    high-water mark) is on the private ``profiler.kineto_results``.
    """
    for event in prof.profiler.kineto_results.events():
        if event.name() == "[memory]" and str(event.device_type()).endswith("CPU"):
            yield int(event.start_ns()), int(event.nbytes())


# --------------------------------------------------------------------------- TorchScript → torch.export
# torch's converter from a TorchScript module to an ExportedProgram lives in a private module
# (torch._export.converter); the TorchScript route lifts the program it returns to real Conv2d / Linear layers.
def torchscript_to_exported(script: Any, example_args: tuple) -> torch.export.ExportedProgram:
    """``TS2EPConverter(script, example_args).convert()``: the TorchScript graph as an ExportedProgram."""
    from torch._export.converter import TS2EPConverter

    return TS2EPConverter(script, example_args).convert()


def quantization_fx_graph(module: nn.Module) -> torch.fx.Graph:
    """The FX graph ``prepare_fx`` would trace: torch.ao's ``QuantizationTracer`` (in the undocumented
    torch.ao.quantization.fx.tracer) keeps quantized and observed modules as leaves, as the real prepare does."""
    from torch.ao.quantization.fx.tracer import QuantizationTracer

    return QuantizationTracer([], []).trace(module)


def reset_torch_compile(*, freezing: bool) -> None:
    """Forget every graph ``torch.compile`` built (``torch._dynamo.reset``) and set Inductor's private
    ``freezing`` flag, which decides whether int8 patterns are lowered, for the next compile."""
    import torch._dynamo
    import torch._inductor.config

    torch._dynamo.reset()
    torch._inductor.config.freezing = freezing


# --------------------------------------------------------------------------- saved file layouts
# Neither coremltools nor torch documents these layouts or offers a reader for them; the product reads them only to
# say where an artifact's bytes go.

# An .mlpackage keeps its tensors in Data/com.apple.CoreML/weights/weight.bin (the MIL blob storage format).
MLPACKAGE_WEIGHTS_FOLDER = "weights"
MLPACKAGE_WEIGHT_FILE = "weight.bin"
# Each blob in weight.bin starts with a 64-byte metadata record: uint32 sentinel, uint32 data type, uint64 size in
# bytes, uint64 offset of the data, then padding; the data itself is 64-byte aligned.
WEIGHT_BLOB_SENTINEL = 0xDEADBEEF
WEIGHT_BLOB_HEADER_BYTES = 64


def mlpackage_weight_files(package: Path | str) -> list[Path]:
    """The files an .mlpackage stores tensors in (its weights/ folder); an mlprogram package has one weight.bin."""
    return sorted(p for p in Path(package).rglob("*") if p.is_file() and p.parent.name == MLPACKAGE_WEIGHTS_FOLDER)


def weight_blob_data_bytes(weight_file: bytes, offset: int) -> int | None:
    """The data size the blob header at `offset` of a weight.bin records, or None when no header starts there."""
    if offset < 0 or offset + WEIGHT_BLOB_HEADER_BYTES > len(weight_file):
        return None
    sentinel, _data_type, size = struct.unpack_from("<IIQ", weight_file, offset)
    return int(size) if sentinel == WEIGHT_BLOB_SENTINEL else None


# torch.jit.save writes a zip: <archive>/code/ (the TorchScript source), <archive>/constants.pkl, <archive>/data.pkl
# (the pickled module structure) and <archive>/data/<n> (one raw storage per tensor).
def is_torchscript_tensor_entry(name: str) -> bool:
    """Whether a member of a TorchScript (or torch.save) zip is raw tensor data rather than code or pickles."""
    return "/data/" in name and not name.endswith(".pkl")


def is_torchscript_archive(names: Iterable[str]) -> bool:
    """Whether zip members are a TorchScript file's (its code and constants), not a torch.export program's."""
    names = list(names)
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


# --------------------------------------------------------------------------- coremltools' TorchScript frontend
# coremltools 9.0 converts aten::Int / aten::Bool of a folded constant with ``int(value)``. A traced shape computation
# (ShuffleNet's ``num_channels // groups``, ViT's ``h // patch_size``) folds to a length-1 array, which NumPy >= 2.4
# no longer converts to a scalar ("only 0-dimensional arrays can be converted to Python scalars"). The converters are
# looked up in coremltools' private op registry by TorchScript op name; the wrapper handles that one case and hands
# every other to coremltools' own converter.
def coreml_casts_accept_length_one_constants() -> None:
    """Make the aten::Int / aten::Bool converters take a length-1 constant as its single value (idempotent)."""
    import numpy as np
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    for op_name, python_type in (("int", int), ("bool", bool)):
        original = _TORCH_OPS_REGISTRY.get_func(op_name)
        if getattr(original, "accepts_length_one_constants", False):
            continue

        def convert(context, node, original=original, python_type=python_type):
            name = node.inputs[0] if node.inputs else None
            value = context[name] if isinstance(name, str) and name in context else None
            folded = value.val if value is not None and value.can_be_folded_to_const() else None
            if folded is not None and np.ndim(folded) > 0 and np.size(folded) == 1:
                context.add(mb.const(val=python_type(np.asarray(folded).item()), name=node.name), node.name)
            else:
                original(context, node)

        convert.accepts_length_one_constants = True
        _TORCH_OPS_REGISTRY.set_func_by_name(convert, op_name)
