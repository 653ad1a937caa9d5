"""Activation quantization of graph-form models (torch.export programs) and of modules FX cannot trace: the FX
quantizers on a module-level view of the ATen graph (core.compress.pt2e), with the engine named in the notes."""

from __future__ import annotations

import dataclasses
import importlib.util
import re

import pytest
import torch
from torch import nn
from torch.ao.nn import quantized as nnq

from core.compress import CompressionError, compress
from core.compress.pt2e import is_aten_graph, module_level_graph, pt2e_unavailable_reason
from core.experiment import run_experiment
from core.experiment_options import ExperimentOptions
from core.export import export_coreml, export_coreml_baseline, export_torchscript
from core.measure.size import path_size_bytes
from core.models.graph_forms import lift_program
from core.models.sources import LoadedModel, load_model
from core.paths import HOME_ENV
from core.specs import QuantizeActivationsSpec, TorchStaticSpec
from tests.conftest import assert_unchanged, loaded, state_snapshot

GRAPH_ENGINE = "engine: FX graph mode on a module-level view of the exported graph"
# the int8 form forced, so no form race is timed
STATIC = {"engine": "x86", "graph": "graph_module", "calibration_samples": 64}


@pytest.fixture(autouse=True)
def _own_home(tmp_path, monkeypatch):
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))


def exported(model: LoadedModel) -> LoadedModel:
    """The same model as a torch.export program (what an `export:` upload loads as)."""
    program = torch.export.export(model.module, (model.example_input(2),))
    return dataclasses.replace(model, module=lift_program(program)[0], form="exported")


class MobileBlock(nn.Module):
    """Depthwise-separable convs with ReLU6 (exported as hardtanh(0, 6)), an average pool and a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(1, 16, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.relu6(self.bn(self.expand(x)))
        x = nn.functional.relu6(self.depthwise(x))
        return self.head(nn.functional.avg_pool2d(x, 14).flatten(1))


class ShapeBranch(nn.Module):
    """A forward FX cannot trace (Python control flow on a shape), which torch.export captures."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 28 * 28, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > 16:  # bool() of a traced value: FX raises TraceError
            x = torch.relu(self.conv(x))
        return self.fc(x.flatten(1))


class ValueBranch(ShapeBranch):
    """Control flow on tensor values: neither FX nor torch.export can capture it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            x = torch.relu(self.conv(x))
        return self.fc(x.flatten(1))


def test_module_level_view_has_named_layers_and_computes_the_same(tiny):
    for module in (tiny.module, MobileBlock().eval()):
        graph = torch.export.export(module, (torch.randn(2, 1, 28, 28),)).module()
        assert is_aten_graph(graph) and not any(isinstance(m, nn.Conv2d) for m in graph.modules())
        snapshot = state_snapshot(graph)
        view = module_level_graph(graph)
        assert not is_aten_graph(view)  # every op of these models has a torch-level form
        assert_unchanged(graph, snapshot)
        names = {name: type(m) for name, m in view.named_modules()}
        for name, layer in module.named_modules():
            if isinstance(layer, nn.Conv2d | nn.Linear | nn.BatchNorm2d):
                assert names[name] is type(layer), name  # named after its parameters, like the Python module
        x = torch.randn(4, 1, 28, 28)
        with torch.no_grad():
            assert torch.equal(view(x), module(x))
    assert any(type(m) is nn.ReLU6 for m in module_level_graph(graph).modules())  # hardtanh(0, 6) → ReLU6


def test_pt2e_reason_names_what_is_missing():
    reason = pt2e_unavailable_reason()
    if importlib.util.find_spec("torchao") is None:
        assert "torchao" in reason and "ModuleNotFoundError" in reason and torch.__version__ in reason
    else:
        assert reason is None or "CoreMLQuantizer" in reason


@pytest.mark.slow
def test_w8a8_on_an_exported_program_matches_the_module_and_ships_int8(fashion, tmp_path):
    model = load_model("sample:fashion_cnn")
    graph = exported(model)
    spec = QuantizeActivationsSpec(calibration_samples=128)
    from_graph = compress(model=graph, spec=spec, dataset=fashion)
    from_module = compress(model=model, spec=spec, dataset=fashion)
    assert any(note.startswith(GRAPH_ENGINE) for note in from_graph.notes)
    assert not any(note.startswith("engine:") for note in from_module.notes)
    assert [(r.name, r.compressed, r.bits) for r in from_graph.layers] == [
        (r.name, r.compressed, r.bits) for r in from_module.layers
    ]
    images, labels = next(iter(fashion.batches(fashion.eval_split(limit=512), batch_size=512)))
    with torch.no_grad():
        quantized, reference = from_graph.module(images), model.module(images)
        assert torch.equal(quantized, from_module.module(images))  # same observers, same fusions, same numbers
    fp32_accuracy = (reference.argmax(1) == labels).float().mean().item()
    accuracy = (quantized.argmax(1) == labels).float().mean().item()
    assert fp32_accuracy > 0.85 and abs(accuracy - fp32_accuracy) < 0.02
    assert (quantized.argmax(1) == reference.argmax(1)).float().mean() > 0.97
    package = export_coreml(module=from_graph.module, input_shape=model.input_shape, path=tmp_path / "w8a8.mlpackage")
    baseline = export_coreml_baseline(model=model, path=tmp_path / "fp16.mlpackage")
    assert 0.45 < path_size_bytes(package) / path_size_bytes(baseline) < 0.56  # int8 weights: half of fp16


@pytest.mark.slow
def test_the_record_of_an_exported_program_names_the_engine(fashion, tmp_path):
    model = load_model("sample:fashion_cnn")
    batch = {0: torch.export.Dim.AUTO}  # an upload is evaluated in batches of any size
    program = torch.export.export(model.module, (model.example_input(2),), dynamic_shapes=(batch,))
    graph = dataclasses.replace(model, module=lift_program(program)[0], form="exported")
    options = ExperimentOptions(eval_limit=200, measure_latency=False, measure_memory=False, cache_dir=tmp_path / "cache")
    record = run_experiment(
        model=graph, spec=QuantizeActivationsSpec(calibration_samples=64), dataset=fashion,
        artifacts_dir=tmp_path / "run", options=options,
    )
    assert any(note.startswith(GRAPH_ENGINE) for note in record["notes"])
    assert record["artifact_kind"] == "mlpackage" and record["agreement_top1"] > 0.97
    assert abs(record["size_bytes"] / record["theoretical_size_bytes"] - 1) < 0.05


@pytest.mark.slow
def test_static_int8_on_an_exported_program_runs_int8_kernels_and_saves(tiny, fashion, tmp_path):
    graph = exported(tiny)
    snapshot = state_snapshot(graph.module)
    result = compress(model=graph, spec=TorchStaticSpec(**STATIC), dataset=fashion)
    assert_unchanged(graph.module, snapshot)
    assert any(note.startswith(GRAPH_ENGINE) for note in result.notes)
    assert result.runs_int8_kernels
    assert sum(isinstance(m, nnq.Conv2d | nnq.Linear) for m in result.module.modules()) == 6
    assert sum("quantized.add" in str(n.target) for n in result.module.graph.nodes) == 1  # the residual add
    assert {r.name for r in result.layers if r.compressed} == {"conv1", "conv2", "conv3", "conv4", "fc1", "fc2"}
    assert all(r.snr_db > 35 for r in result.layers)  # against the BatchNorm-folded weights of the original
    images, _ = next(iter(fashion.batches(fashion.eval_split(limit=256), batch_size=256)))
    with torch.no_grad():
        int8, fp32 = result.module(images), tiny.module(images)
    assert (int8.argmax(1) == fp32.argmax(1)).float().mean() > 0.9
    path = export_torchscript(module=result.module, input_shape=tiny.input_shape, path=tmp_path / "int8.pt")
    reloaded = torch.jit.load(str(path))
    with torch.no_grad():
        assert torch.equal(reloaded(images), result.module(images))
    fp32_bytes = sum(p.numel() * 4 for p in tiny.module.parameters())
    assert path_size_bytes(path) < fp32_bytes + 200_000  # int8 weights plus the TorchScript code


def test_a_module_fx_cannot_trace_is_captured_with_torch_export(fashion):
    model = loaded(ShapeBranch(), label="shape_branch")
    with pytest.raises(torch.fx.proxy.TraceError):
        torch.fx.symbolic_trace(model.module)
    for spec in (QuantizeActivationsSpec(calibration_samples=32), TorchStaticSpec(**STATIC)):
        result = compress(model=model, spec=spec, dataset=fashion)
        note = next(note for note in result.notes if note.startswith("FX could not trace"))
        assert "module-level view of the torch.export capture" in note
        assert [r.name for r in result.layers if r.compressed] == ["conv", "fc"]


def test_a_graph_whose_layers_are_modules_is_quantized_as_loaded(tiny, fashion):
    graph = dataclasses.replace(tiny, module=torch.fx.symbolic_trace(tiny.module), form="onnx")  # like onnx2torch's
    result = compress(model=graph, spec=QuantizeActivationsSpec(calibration_samples=32), dataset=fashion)
    assert "engine: FX graph mode on the onnx graph as loaded (its layers are modules already)" in result.notes
    assert all(r.compressed for r in result.layers)


def test_no_engine_gives_one_reason(fashion):
    with pytest.raises(CompressionError, match=r"neither by FX graph mode .* nor after a torch\.export capture"):
        compress(model=loaded(ValueBranch(), label="value_branch"), spec=QuantizeActivationsSpec(), dataset=fashion)
    script = torch.jit.trace(ShapeBranch().eval(), torch.randn(1, 1, 28, 28))
    # a TorchScript file torch's converter could not turn into a graph stays a ScriptModule
    as_script = dataclasses.replace(loaded(ShapeBranch(), label="script"), module=script, form="torchscript",
                                    is_torchscript=True)
    for spec in (QuantizeActivationsSpec(), TorchStaticSpec()):
        with pytest.raises(CompressionError, match=r"export it with torch\.export \(\.pt2\)"):
            compress(model=as_script, spec=spec, dataset=fashion)


class HalvedConv(nn.Module):
    """A division by a constant: onnx2torch's Div module branches on its inputs' dtype, so FX cannot trace the graph."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8 * 14 * 14, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc((torch.relu(self.conv(x)) / 2.0).flatten(1))


class ChannelShuffle(HalvedConv):
    """ShuffleNet's channel shuffle: exported with a dynamic batch, the view's shape is computed from tensor values."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))
        b, c, h, w = x.size()
        x = x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)
        return self.fc(x.flatten(1))


def _onnx_model(module: nn.Module, tmp_path) -> LoadedModel:
    import warnings

    from core.models.graph_forms import load_onnx

    path = tmp_path / f"{type(module).__name__}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.randn(2, 1, 28, 28),), str(path), input_names=["input"],
                          output_names=["logits"], opset_version=17, dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return load_onnx(path)


def test_an_onnx_graph_fx_cannot_trace_is_captured_with_torch_export(fashion, tmp_path):
    torch.manual_seed(0)
    model = _onnx_model(HalvedConv(), tmp_path)
    for spec in (QuantizeActivationsSpec(calibration_samples=32), TorchStaticSpec(**STATIC)):
        result = compress(model=model, spec=spec, dataset=fashion)
        note = next(note for note in result.notes if note.startswith("FX could not trace the onnx graph at"))
        assert "(OnnxBinaryMathOperation: " in note and "module-level view of the onnx graph" in note
        assert sum(r.compressed for r in result.layers) == 2


def test_an_onnx_graph_with_shape_arithmetic_on_values_is_refused_naming_the_node(fashion, tmp_path):
    model = _onnx_model(ChannelShuffle(), tmp_path)
    for spec in (QuantizeActivationsSpec(calibration_samples=32), TorchStaticSpec(**STATIC)):
        with pytest.raises(CompressionError) as refused:
            compress(model=model, spec=spec, dataset=fashion)
        message = str(refused.value)
        assert "\n" not in message and "Traceback" not in message
        assert re.search(r"cannot run on this onnx graph: its node \S+ \(Onnx\w+\) computes shapes from tensor "
                         r"values", message), message
        assert "torchvision: / timm: route" in message and "weight-only methods work on this file" in message


def test_a_torchscript_graph_with_shape_arithmetic_is_quantized(fashion, tmp_path):
    """Converted from TorchScript, the channel shuffle's sizes are symbolic ints (height, width, batch × groups);
    non-batch sizes become the declared input's and batch products stay scalar, so no observer lands on an int."""
    torch.manual_seed(0)
    path = tmp_path / "shuffle.pt"
    torch.jit.save(torch.jit.trace(ChannelShuffle().eval(), torch.randn(2, 1, 28, 28)), str(path))
    model = load_model(f"torchscript:{path}")
    assert not model.is_torchscript  # converted to a graph
    for spec in (QuantizeActivationsSpec(calibration_samples=32), TorchStaticSpec(**STATIC)):
        result = compress(model=model, spec=spec, dataset=fashion)
        assert "engine: FX graph mode on a module-level view of the torchscript graph" in " ".join(result.notes)
        assert sum(r.compressed for r in result.layers) == 2
        with torch.no_grad():
            assert result.module(torch.randn(3, 1, 28, 28)).shape == (3, 10)  # the batch stays free
