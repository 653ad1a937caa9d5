"""Contract tests for the private coremltools / PyTorch internals the product relies on (core.library_internals).

Each test names the internal symbol it pins; when a library upgrade moves or changes one, the failure says which.
A tiny real call shows the symbol still does what the engine uses it for.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import core.library_internals as internals

CORE = Path(__file__).resolve().parents[1] / "core"


def _fail(symbol: str, what: str) -> None:
    pytest.fail(f"coremltools/torch internal changed — {symbol}: {what}. Update core/library_internals.py.")


def _parameters(func) -> set[str]:
    return set(inspect.signature(func).parameters)


def test_compression_metadata_buffers():
    """coremltools.optimize.torch._utils.metadata_utils: CompressionMetadata, the _COREML_ prefix, type codes."""
    symbol = "coremltools.optimize.torch._utils.metadata_utils"
    if internals.METADATA_PREFIX != "_COREML_" or internals.METADATA_SEPARATOR != "/":
        _fail(f"{symbol}.STATE_DICT_METADATA_BUFFER_PREFIX", f"is {internals.METADATA_PREFIX!r}")
    if internals.COMPRESSION_TYPES != {1: "pruning", 2: "palettization", 3: "quantization"}:
        _fail(f"{symbol}.CompressionType", f"codes are {internals.COMPRESSION_TYPES}")
    layer = nn.Linear(4, 4)
    metadata = internals.CompressionMetadata("weight")
    metadata.lut = torch.zeros(1, 1, 4, 1)
    metadata.compression_type = ["pruning", "palettization"]
    metadata.register(layer)
    buffers = internals.metadata_buffers(layer)
    if set(buffers) != {"lut", "compression_type"}:
        _fail(f"{symbol}.CompressionMetadata.register", f"registered {sorted(buffers)}")
    assert buffers["compression_type"].tolist() == [1, 2]
    model = nn.Sequential(layer)
    internals.register_metadata_version(model)
    if "_COREML_/metadata_version" not in dict(model.named_buffers()):
        _fail(f"{symbol}.register_metadata_version", "no _COREML_/metadata_version buffer")


def test_sequential_kmeans_masked_clustering():
    """coremltools.optimize.torch._utils.k_means: KMeansConfig fields and SequentialKMeans.cluster_weights."""
    symbol = "coremltools.optimize.torch._utils.k_means"
    fields = {f.name for f in dataclasses.fields(internals.KMeansConfig)} if dataclasses.is_dataclass(
        internals.KMeansConfig) else _parameters(internals.KMeansConfig)
    needed = {"n_bits", "axis", "lut_dtype", "block_size", "cluster_dim", "enable_per_channel_scale", "mask", "importance"}
    if not needed <= fields:
        _fail(f"{symbol}.KMeansConfig", f"lacks {sorted(needed - fields)}")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8))
    mask = torch.rand(8, 16) > 0.5
    model[0].weight.data *= mask
    config = internals.KMeansConfig(n_bits=2, axis=0, mask=mask, importance=None)
    internals.SequentialKMeans.cluster_weights(model, {"0": {"weight": config}})
    weight = model[0].weight.detach()
    if weight.unique().numel() > 4 + 1:  # 4 centroids for the survivors, plus the pruned zeros
        _fail(f"{symbol}.SequentialKMeans.cluster_weights", f"{weight.unique().numel()} distinct values after 2-bit k-means")
    assert (weight[~mask] == 0).all(), "masked k-means moved pruned weights off zero"


def test_coreml_palettize_routine():
    """coremltools.optimize.coreml._quantization_passes.palettize_weights: grouped_channelwise_compress / decompress."""
    symbol = "coremltools.optimize.coreml._quantization_passes.palettize_weights"
    routine = internals.CoreMLPalettizePass
    needed = {"original_data", "mode", "nbits", "channel_axis", "channel_group_size", "cluster_dim"}
    if not needed <= _parameters(routine.grouped_channelwise_compress):
        _fail(f"{symbol}.grouped_channelwise_compress", f"signature is {inspect.signature(routine.grouped_channelwise_compress)}")
    weight = np.random.default_rng(0).standard_normal((8, 12)).astype(np.float32)
    params = routine.grouped_channelwise_compress(weight, "UNIFORM", 2, channel_axis=0, channel_group_size=0, cluster_dim=1)
    dense = routine.decompress(params)
    if dense.shape != weight.shape or len(np.unique(dense)) > 4:
        _fail(f"{symbol}.decompress", f"shape {dense.shape}, {len(np.unique(dense))} distinct values for 2 bits")


def test_pruning_masks_and_quantization_arithmetic():
    """coremltools.optimize.torch.pruning._utils (mask rules) and coremltools.optimize._utils (qparams)."""
    weight = torch.arange(1.0, 17.0).reshape(2, 8)
    needed = {"weights", "sparsity_fraction", "block_size", "granularity"}
    if not needed <= _parameters(internals.magnitude_ranked_mask):
        _fail("pruning._utils.magnitude_ranked_mask", f"signature is {inspect.signature(internals.magnitude_ranked_mask)}")
    mask = internals.magnitude_ranked_mask(weight, 0.5, 1, "per_scalar")
    if int(mask.sum()) != 8 or not bool(mask[1].all()):
        _fail("pruning._utils.magnitude_ranked_mask", f"kept {mask.tolist()} of 1…16 at 50 %")
    nm = internals.n_m_mask(weight, (2, 4), dim=1)
    if int(nm.sum()) != 8:
        _fail("pruning._utils.n_m_mask", f"kept {int(nm.sum())} of 16 weights for 2:4")
    if not {"weight", "nbits", "signed", "quantization_mode", "block_sizes"} <= _parameters(internals.compute_qparams):
        _fail("coremltools.optimize._utils.compute_qparams", f"signature is {inspect.signature(internals.compute_qparams)}")
    data = np.linspace(-1.0, 1.0, 16, dtype=np.float32).reshape(2, 8)
    codes, scale, zero_point = internals.compute_qparams(data, 8, True, "LINEAR_SYMMETRIC", None, [1, 0])
    restored = internals.dequantize_by_scale_and_zp(codes, scale, zero_point)
    if restored.shape != data.shape or np.abs(restored - data).max() > 1.0 / 127:
        _fail("coremltools.optimize._utils.dequantize_by_scale_and_zp", "does not invert compute_qparams within one step")


@pytest.mark.parametrize(
    ("symbol", "adapter"),
    [
        ("PostTrainingPalettizer._supported_modules", internals.post_training_palettizer_modules),
        ("palettization._supported_modules.DKMPalettizerModulesRegistry", internals.dkm_palettizer_modules),
        ("PostTrainingQuantizer._supported_modules", internals.post_training_quantizer_modules),
        ("pruning.magnitude_pruner._SUPPORTED_MODULES", internals.magnitude_pruner_modules),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_supported_layer_types(symbol, adapter):
    try:
        modules = adapter()
    except (AttributeError, ImportError) as exc:
        _fail(symbol, f"no longer resolves ({exc})")
    if not (isinstance(modules, tuple) and {nn.Conv2d, nn.Linear} <= set(modules)):
        _fail(symbol, f"is {modules!r}, expected a tuple holding Conv2d and Linear")


def test_skm_tempdir_is_released():
    """SKMPalettizer._tempdir: the sensitivities' temporary directory the engine removes after compression."""
    from coremltools.optimize.torch.palettization import SKMPalettizer, SKMPalettizerConfig

    skm = SKMPalettizer(nn.Sequential(nn.Linear(4, 4)), SKMPalettizerConfig())
    tempdir = getattr(skm, "_tempdir", None)
    if tempdir is None or not Path(tempdir.name).is_dir():
        _fail("SKMPalettizer._tempdir", "missing")
    internals.release_skm_tempdir(skm)
    assert not Path(tempdir.name).exists()


def test_torch_internals():
    """torch.nn.modules.batchnorm._BatchNorm and the packed-params state_dict keys of quantized Linear."""
    if not all(issubclass(cls, internals.BatchNormBase) for cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
        _fail("torch.nn.modules.batchnorm._BatchNorm", "is no longer the base of BatchNorm{1,2,3}d")
    quantized = torch.ao.quantization.quantize_dynamic(nn.Sequential(nn.Linear(4, 4)), {nn.Linear}, dtype=torch.qint8)
    keys = list(quantized.state_dict())
    if not any(key.endswith(internals.PACKED_PARAMS_SUFFIXES) for key in keys):
        _fail("torch.ao quantized Linear state_dict layout", f"keys are {keys}")


def test_aten_op_overload():
    """torch._ops.OpOverload: the type of a torch.export graph's ATen call targets."""
    if not isinstance(torch.ops.aten.conv2d.default, internals.AtenOpOverload):
        _fail("torch._ops.OpOverload", "torch.ops.aten.conv2d.default is not one")
    if isinstance(torch.relu, internals.AtenOpOverload):
        _fail("torch._ops.OpOverload", "also matches the Python function torch.relu")


def test_coreml_quantizer_module():
    """coremltools.optimize.torch.quantization._coreml_quantizer: where CoreMLQuantizer is defined."""
    import importlib.util

    if importlib.util.find_spec(internals.COREML_QUANTIZER_MODULE) is None:
        _fail(internals.COREML_QUANTIZER_MODULE, "no longer exists")


def test_profiler_memory_events():
    """torch.profiler profile.profiler.kineto_results: the ordered allocation stream peak memory is read from."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        torch.ones(256, 256).sum()
    try:
        events = list(internals.profiler_memory_events(prof))
    except AttributeError as exc:
        _fail("torch.autograd.profiler.profile.kineto_results", str(exc))
    if not any(nbytes >= 256 * 256 * 4 for _start, nbytes in events):
        _fail("kineto_results.events() [memory]", f"no allocation of the 256×256 tensor among {len(events)} events")


def test_torchscript_to_exported_converter():
    """torch._export.converter.TS2EPConverter: TorchScript module → ExportedProgram with the same outputs."""
    symbol = "torch._export.converter.TS2EPConverter"
    module = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval()
    example = torch.randn(2, 1, 6, 6)
    program = internals.torchscript_to_exported(torch.jit.trace(module, example), (example,))
    if not isinstance(program, torch.export.ExportedProgram):
        _fail(symbol, f"convert() returned {type(program).__name__}")
    with torch.no_grad():
        if not torch.allclose(program.module()(example), module(example), atol=1e-6):
            _fail(symbol, "the program's outputs differ from the TorchScript module's")


PRIVATE_USES = re.compile(
    r"(from coremltools[\w.]*\._\w+|import coremltools[\w.]*\._\w+|\._supported_modules|_SUPPORTED_MODULES|"
    r"\._tempdir|kineto_results|torch\._export|[\"']_COREML_|batchnorm\._BatchNorm|\._packed_params|"
    # private torch modules, torch.ao's FX tracer, and the file layouts read through the adapters
    r"(?<![\"'\w.])torch\._[a-z]\w*|from torch[\w.]*\._\w+|QuantizationTracer|0xDEADBEEF|\.name == [\"']weights|"
    r"[\"']/data/[\"']|constants\.pkl|[\"']/code/|rglob\([\"']weight\.bin|"
    # the private modules of the other libraries the product imports
    r"(from|import) (streamlit|timm|onnx2torch|onnx|torchvision)[\w.]*\._\w+)"
)
CHECKED_FOLDERS = ("core", "pages", "bench")


def test_nothing_else_touches_private_library_symbols():
    offenders = [
        f"{path.relative_to(CORE.parent)}:{number}: {line.strip()}"
        for folder in CHECKED_FOLDERS
        for path in sorted((CORE.parent / folder).rglob("*.py"))
        if path.name != "library_internals.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if PRIVATE_USES.search(line)
    ]
    assert not offenders, (
        "private library internals outside core/library_internals.py (import its adapters instead: metadata_buffers, "
        "METADATA_PREFIX, magnitude_ranked_mask, n_m_mask, compute_qparams, dequantize_by_scale_and_zp, "
        "quantization_fx_graph, weight_blob_data_bytes, is_torchscript_archive, …):\n"
        + "\n".join(offenders)
    )


def test_coremltools_tested_torch_version():
    """coremltools._deps._TORCH_MAX_VERSION: the newest torch version this coremltools release was tested with."""
    value = internals.COREMLTOOLS_TESTED_TORCH
    if not isinstance(value, str) or not re.match(r"^\d+\.\d+(\.\d+)?$", value):
        _fail("coremltools._deps._TORCH_MAX_VERSION", f"expected a version string, got {value!r}")


def test_mil_program_loader_and_constexpr_decompress(tmp_path):
    """coremltools.converters.mil.frontend.milproto.load (undocumented): a saved .mlpackage read back as a MIL
    program whose constexpr ops decompress with their static ``decompress`` (core.measure.artifact_weights)."""
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    symbol = "coremltools.converters.mil.frontend.milproto.load.load"
    traced = torch.jit.trace(nn.Sequential(nn.Linear(64, 32)).eval(), torch.randn(1, 64))
    mlmodel = ct.convert(traced, inputs=[ct.TensorType(shape=(1, 64))], convert_to="mlprogram",
                         minimum_deployment_target=ct.target.iOS18, skip_model_load=True)
    config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=2, weight_threshold=0))
    cto.palettize_weights(mlmodel, config).save(str(tmp_path / "m.mlpackage"))
    program = internals.load_mil_program(tmp_path / "m.mlpackage")
    luts = [op for f in program.functions.values() for op in f.operations if op.op_type == "constexpr_lut_to_dense"]
    if len(luts) != 1:
        _fail(symbol, f"found {len(luts)} constexpr_lut_to_dense ops in a palettized Linear")
    op = luts[0]
    dense = type(op).decompress(op.inputs["indices"].val, op.inputs["lut"].val, None)
    if dense.shape != (32, 64) or len(np.unique(dense)) > 4:
        _fail(f"{symbol} / constexpr_lut_to_dense.decompress", f"decoded {dense.shape}, {len(np.unique(dense))} values")


def test_packed_params_class():
    """torch ScriptObject._type() (private): the class name of a packed int8 weight."""
    layer = torch.ao.nn.quantized.Linear(4, 4)
    packed = getattr(getattr(layer, internals.PACKED_PARAMS_ATTRIBUTE), internals.PACKED_PARAMS_ATTRIBUTE)
    if internals.packed_params_class(packed) != "LinearPackedParamsBase":
        _fail("ScriptObject._type().qualified_name()", internals.packed_params_class(packed))
    weight, _bias = torch.ops.quantized.linear_unpack(packed)
    assert weight.shape == (4, 4)


def test_quantization_fx_graph():
    """torch.ao.quantization.fx.tracer.QuantizationTracer (undocumented): the graph prepare_fx traces."""
    symbol = "torch.ao.quantization.fx.tracer.QuantizationTracer"
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU6(), nn.Flatten(), nn.Linear(8, 3)).eval()
    graph = internals.quantization_fx_graph(model)
    called = [node.target for node in graph.nodes if node.op == "call_module"]
    if called != ["0", "1", "2", "3"]:
        _fail(symbol, f"traced call_module targets {called}")
    traced = torch.fx.GraphModule(model, graph)
    example = torch.randn(1, 1, 4, 4)
    assert torch.equal(traced(example), model(example))


def test_reset_torch_compile_sets_inductor_freezing():
    """torch._dynamo.reset and torch._inductor.config.freezing (private): a fresh compile with freezing on or off."""
    import torch._inductor.config as inductor_config

    before = inductor_config.freezing
    try:
        for value in (True, False):
            internals.reset_torch_compile(freezing=value)
            if inductor_config.freezing is not value:
                _fail("torch._inductor.config.freezing", f"is {inductor_config.freezing!r} after setting {value}")
    finally:
        inductor_config.freezing = before


def test_mlpackage_weight_file_and_blob_headers(tmp_path):
    """The .mlpackage layout (weights/weight.bin) and the 64-byte blob header (sentinel 0xDEADBEEF, data size)."""
    import coremltools as ct
    from coremltools.models.utils import load_spec

    traced = torch.jit.trace(nn.Sequential(nn.Linear(64, 32)).eval(), torch.randn(1, 64))
    package = tmp_path / "m.mlpackage"
    ct.convert(traced, inputs=[ct.TensorType(shape=(1, 64))], convert_to="mlprogram",
               minimum_deployment_target=ct.target.iOS18, skip_model_load=True).save(str(package))
    files = internals.mlpackage_weight_files(package)
    if [f.name for f in files] != [internals.MLPACKAGE_WEIGHT_FILE]:
        _fail(".mlpackage weights/ folder", f"holds {[f.name for f in files]}")
    data = files[0].read_bytes()
    offsets = [
        op.attributes["val"].blobFileValue.offset
        for function in load_spec(str(package)).mlProgram.functions.values()
        for block in function.block_specializations.values()
        for op in block.operations
        if op.type == "const" and "val" in op.attributes and op.attributes["val"].WhichOneof("value") == "blobFileValue"
    ]
    sizes = sorted(internals.weight_blob_data_bytes(data, offset) for offset in offsets)
    if sizes != [32 * 2, 32 * 64 * 2]:  # the fp16 bias and weight
        _fail("weight.bin blob header", f"data sizes {sizes} at offsets {offsets}")
    assert internals.weight_blob_data_bytes(data, offsets[0] + 1) is None  # no header there
    assert internals.weight_blob_data_bytes(data, len(data)) is None


def test_torchscript_zip_layout(tmp_path):
    """torch.jit.save's zip: code/ and constants.pkl mark TorchScript; data/<n> members are the raw tensors."""
    import zipfile

    module = torch.jit.script(nn.Linear(16, 8))
    torch.jit.save(module, str(tmp_path / "m.pt"))
    with zipfile.ZipFile(tmp_path / "m.pt") as archive:
        names = archive.namelist()
        tensor_bytes = sum(archive.getinfo(n).file_size for n in names if internals.is_torchscript_tensor_entry(n))
    if not internals.is_torchscript_archive(names):
        _fail("TorchScript zip layout", f"no code/ + constants.pkl among {names}")
    if tensor_bytes != (16 * 8 + 8) * 4:
        _fail("TorchScript zip layout", f"data/ members hold {tensor_bytes} bytes, expected the fp32 weight and bias")
    program = torch.export.export(nn.Linear(16, 8), (torch.randn(1, 16),))
    torch.export.save(program, str(tmp_path / "m.pt2"))
    with zipfile.ZipFile(tmp_path / "m.pt2") as archive:
        assert not internals.is_torchscript_archive(archive.namelist())

class _ChannelShuffle(nn.Module):
    """ShuffleNet's channel shuffle: traced, ``c // 2`` becomes aten::Int of a length-1 constant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.size()
        return x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)


def test_coreml_int_cast_of_a_length_one_constant():
    """coremltools.converters.mil.frontend.torch.torch_op_registry._TORCH_OPS_REGISTRY: the aten::Int converter,
    wrapped so a folded length-1 constant converts under NumPy >= 2.4 (and the wrapping happens once)."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    internals.coreml_casts_accept_length_one_constants()
    internals.coreml_casts_accept_length_one_constants()
    for op_name in ("int", "bool"):
        if not getattr(_TORCH_OPS_REGISTRY.get_func(op_name), "accepts_length_one_constants", False):
            _fail("_TORCH_OPS_REGISTRY.get_func", f"the {op_name!r} converter is not the wrapped one")
    example = torch.arange(16.0).reshape(1, 4, 2, 2)
    traced = torch.jit.trace(_ChannelShuffle().eval(), example)
    mlmodel = ct.convert(traced, inputs=[ct.TensorType(shape=(1, 4, 2, 2))], convert_to="mlprogram",
                         minimum_deployment_target=ct.target.iOS18, skip_model_load=True)
    assert mlmodel.get_spec().WhichOneof("Type") == "mlProgram"
