"""The graph routes — export:<file.pt2>, onnx:<file.onnx>, torchscript:<file> — load as lifted models and compress."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from core.compress import CompressionError, compress
from core.compress.applicability import method_availability, workflow_availability
from core.compress.layers import weight_layers
from core.export import export_coreml
from core.jobs.refs import ModelRef, load_model_ref
from core.models.architectures import FashionCNN
from core.models.sources import ModelLoadError, load_model
from core.models.torchscript_probe import ALLOW_ENV
from core.specs import PalettizeSpec

EXAMPLE = torch.zeros(1, 1, 28, 28)


@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(0)
    return FashionCNN().eval()


@pytest.fixture(scope="module")
def files(net, tmp_path_factory) -> dict[str, Path]:
    """The same model saved in every graph form (a static batch of 1 for .pt2, as users usually export it)."""
    root = tmp_path_factory.mktemp("graph_forms")
    paths = {"export": root / "cnn.pt2", "torchscript": root / "cnn_traced.pt", "scripted": root / "cnn_scripted.pt",
             "onnx": root / "cnn.onnx"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(net, (EXAMPLE,)), paths["export"])
        torch.jit.save(torch.jit.trace(net, EXAMPLE), str(paths["torchscript"]))
        torch.jit.save(torch.jit.script(net), str(paths["scripted"]))
        torch.onnx.export(net, (EXAMPLE,), str(paths["onnx"]), dynamo=False, input_names=["input"],
                          dynamic_axes={"input": {0: "batch"}})
    return paths


ROUTES = [("export", "exported"), ("torchscript", "torchscript"), ("scripted", "torchscript"), ("onnx", "onnx")]


def _source(files: dict[str, Path], key: str) -> str:
    prefix = "torchscript" if key == "scripted" else key
    return f"{prefix}:{files[key]}"


@pytest.mark.slow
@pytest.mark.parametrize("key,form", ROUTES)
def test_each_route_loads_as_a_lifted_model_with_the_same_outputs(net, files, key, form):
    model = load_model(_source(files, key))
    assert model.form == form and not model.is_torchscript
    assert model.input_shape == (1, 28, 28) and model.num_classes == 10 and model.dataset == "fashion_mnist"
    layers = weight_layers(model.module)
    assert len(layers) == len(weight_layers(net)) and all(isinstance(m, nn.Conv2d | nn.Linear) for m in layers.values())
    x = torch.randn(5, 1, 28, 28)  # a batch the .pt2 (exported at batch 1) was never run with
    with torch.no_grad():
        assert torch.allclose(model.module(x), net(x), atol=1e-4)
    assert not model.manifest["lifting"]["unlifted"]
    if form != "onnx":  # onnx2torch already turns Conv / Gemm into layers; the other forms are lifted
        assert set(model.manifest["lifting"]["lifted"]) == set(layers)


@pytest.mark.slow
@pytest.mark.parametrize("key", ["export", "torchscript", "onnx"])
def test_palettize_4bit_on_each_route_writes_a_real_lut_mlpackage(files, key, tmp_path):
    import coremltools as ct

    model = load_model(_source(files, key))
    result = compress(model=model, spec=PalettizeSpec(n_bits=4), dataset=None)
    compressed = [r for r in result.layers if r.compressed]
    assert {r.name for r in result.layers} == set(weight_layers(model.module))
    assert len(compressed) >= len(result.layers) - 1  # the 288-weight first conv is below the size threshold
    assert all(r.reason for r in result.layers if not r.compressed)
    path = export_coreml(module=result.module, input_shape=model.input_shape, path=tmp_path / "m.mlpackage")
    program = ct.utils.load_spec(str(path)).mlProgram
    ops = [op.type for f in program.functions.values() for block in f.block_specializations.values()
           for op in block.operations]
    assert ops.count("constexpr_lut_to_dense") == len(compressed)


@pytest.mark.slow
def test_every_method_and_workflow_applies_to_a_lifted_program(files):
    model = load_model(_source(files, "export"))
    assert set(method_availability(model=model).values()) == {None}  # measured: see core.compress.applicability
    assert set(workflow_availability(model=model).values()) == {None}
    assert model.manifest["lifting"]["companions"] and not model.manifest["lifting"]["frozen"]


class _SharedNorm(nn.Module):
    """One BatchNorm applied twice: its statistics feed two calls, so it cannot become one module."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(1)
        self.fc = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.bn(x)).flatten(1))


@pytest.mark.slow
def test_fine_tuning_is_refused_where_batchnorm_stays_frozen_in_the_graph(tmp_path):
    path = tmp_path / "shared_norm.pt2"
    torch.export.save(torch.export.export(_SharedNorm().eval(), (EXAMPLE,)), path)
    model = load_model(f"export:{path}")
    workflows = workflow_availability(model=model)
    assert workflows["data_free"] is None and workflows["calibration"] is None
    assert "2 BatchNorm / Dropout call(s) of this graph (first: batch_norm) stay fixed in inference mode" in workflows["fine_tune"]
    with pytest.raises(CompressionError, match=r"palettize \(fine_tune\) cannot run on this torch\.export program: .*inference mode"):
        compress(model=model, spec=PalettizeSpec(workflow="fine_tune"), dataset=None)
    assert method_availability(model=model)["torch_static"] is None


def test_onnx_model_takes_fine_tuning_workflows(files):
    model = load_model(_source(files, "onnx"))
    assert all(reason is None for reason in workflow_availability(model=model).values())


class _BakedBatch(nn.Module):
    """A reshape to the example's batch of 1 (``x.view(1, -1)``): export bakes the 1 into the graph."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.view(1, -1))


@pytest.mark.slow
def test_program_with_a_baked_batch_size_is_evaluated_in_slices_of_it(tmp_path):
    from core.models.graph_forms import FixedBatchGraph

    net = _BakedBatch().eval()
    path = tmp_path / "baked.pt2"
    torch.export.save(torch.export.export(net, (EXAMPLE,)), path)
    model = load_model(f"export:{path}")
    assert isinstance(model.module, FixedBatchGraph) and model.module.batch == 1
    assert model.manifest["batch"] == 1 and list(weight_layers(model.module)) == ["program.fc"]
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model.module(x), torch.cat([net(x[i : i + 1]) for i in range(5)]), atol=1e-5)
    methods = method_availability(model=model)
    assert "batch size (1) baked into its reshapes" in methods["torch_static"] and methods["quantize_activations"]
    assert workflow_availability(model=model)["fine_tune"] and methods["palettize"] is None
    result = compress(model=model, spec=PalettizeSpec(n_bits=4), dataset=None)
    assert export_coreml(module=result.module, input_shape=model.input_shape, path=tmp_path / "m.mlpackage").is_dir()


@pytest.mark.slow
def test_torchscript_the_converter_cannot_handle_loads_but_every_method_says_why(unconvertible_torchscript):
    path = unconvertible_torchscript
    model = load_model(f"torchscript:{path}")
    assert model.form == "torchscript" and model.is_torchscript and model.num_classes == 10
    reasons = set(method_availability(model=model).values())
    assert len(reasons) == 1  # one reason, for every method
    (reason,) = reasons
    assert "TorchScript → torch.export converter failed (TS2EPConverter failed for node prim::Loop)" in reason
    assert "export it with torch.export (.pt2), or upload a state_dict" in reason
    with pytest.raises(CompressionError, match=r"palettize cannot run on this TorchScript file: .*prim::Loop"):
        compress(model=model, spec=PalettizeSpec(), dataset=None)


# --------------------------------------------------------------------------- references


@pytest.mark.slow
@pytest.mark.parametrize("key,kind", [("export", "exported"), ("onnx", "onnx"), ("torchscript", "torchscript")])
def test_model_refs_round_trip_and_reload(files, key, kind):
    source_id = _source(files, key)
    ref = ModelRef.from_source_id(source_id)
    assert ref.kind == kind and ref.source_id == source_id
    assert ModelRef.from_dict(ref.to_dict()) == ref
    assert load_model_ref(ref=ref).form == ("exported" if key == "export" else key)


# --------------------------------------------------------------------------- refusals


@pytest.mark.slow
def test_pt2_refusals_name_the_problem(files, tmp_path):
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(ModelLoadError, match=r"junk\.pt2 is not a torch\.export program \(not a zip archive\)"):
        load_model(f"export:{junk}")
    with pytest.raises(ModelLoadError, match=r"is a TorchScript file, not a torch\.export program: load it as TorchScript"):
        load_model(f"export:{files['torchscript']}")
    weights = tmp_path / "weights.pt2"
    torch.save(FashionCNN().state_dict(), weights)
    with pytest.raises(ModelLoadError, match=r"weights\.pt2 is not a torch\.export program \(.+\)\. Save one with torch\.export\.save"):
        load_model(f"export:{weights}")


class _Features(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


@pytest.mark.slow
def test_pt2_that_does_not_return_class_scores_is_refused(tmp_path):
    path = tmp_path / "features.pt2"
    torch.export.save(torch.export.export(_Features(), (EXAMPLE,)), path)
    with pytest.raises(ModelLoadError, match=r"does not return class scores: given 1 image\(s\) of 1×28×28 it returned a torch\.float32 tensor shaped 1×1×28×28"):
        load_model(f"export:{path}")


def test_pt2_obeys_the_program_upload_switch(files, monkeypatch):
    monkeypatch.setenv(ALLOW_ENV, "0")
    with pytest.raises(ModelLoadError, match=rf"uploads are turned off \({ALLOW_ENV}=0\)"):
        load_model(f"export:{files['export']}")


def test_onnx_refusals_name_the_problem(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 definitely not protobuf \xff" * 10)
    with pytest.raises(ModelLoadError, match=r"junk\.onnx is not an ONNX model"):
        load_model(f"onnx:{junk}")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"]), helper.make_node("Hardmax", ["flat"], ["scores"])],
        "hardmax", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 784])],
    )
    path = tmp_path / "hardmax.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    with pytest.raises(ModelLoadError, match=r"uses the ONNX operator Hardmax \(opset 13\), which the ONNX → PyTorch converter \(onnx2torch\) does not support"):
        load_model(f"onnx:{path}")


def test_onnx_that_does_not_return_class_scores_is_refused(tmp_path):
    path = tmp_path / "features.onnx"
    torch.onnx.export(_Features(), (EXAMPLE,), str(path), dynamo=False, input_names=["input"])
    with pytest.raises(ModelLoadError, match=r"features\.onnx does not return class scores: given 1 image\(s\) of 1×28×28"):
        load_model(f"onnx:{path}")


@pytest.mark.slow
def test_cli_methods_lists_what_applies_to_a_graph_model(files, tmp_path, capsys):
    import json

    from core.cli import main

    out = tmp_path / "methods.json"
    assert main(["methods", "--model", f"export:{files['export']}", "--json", str(out)]) == 0
    table = json.loads(out.read_text())
    assert table["form"] == "exported" and table["methods"]["palettize"] is None
    assert table["methods"] == method_availability(model=load_model(f"export:{files['export']}"))
    printed = capsys.readouterr().out
    assert "palettize" in printed and "applies" in printed


def test_cli_refuses_a_bad_graph_file_with_one_line_and_exit_2(files, tmp_path):
    from core.cli import main

    wrong = tmp_path / "model.onnx"
    wrong.write_bytes(Path(files["export"]).read_bytes())  # a .pt2 zip named .onnx
    assert main(["methods", "--model", f"onnx:{wrong}"]) == 2


def _dynamic_batch_onnx(module: nn.Module, x: torch.Tensor, path: Path) -> Path:
    """`module` written as ONNX (opset 17, TorchScript-based exporter) with a dynamic batch, as users export."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), input_names=["input"], output_names=["logits"], opset_version=17,
                          dynamo=False, dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


class _TokensWithLayerNorm(nn.Module):
    """Swin-like: tokens whose width is computed at run time (merging 2×2 patches), then a LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, 8, 4, stride=4)
        self.norm = nn.LayerNorm(32)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        t = self.patch(x).permute(0, 2, 3, 1)  # N × 7 × 7 × 8
        t = t[:, :6, :6, :]
        n = t.shape[0]
        merged = torch.cat([t[:, 0::2, 0::2], t[:, 1::2, 0::2], t[:, 0::2, 1::2], t[:, 1::2, 1::2]], -1)
        merged = merged.reshape(n, -1, merged.shape[-1])
        return self.head(self.norm(merged).mean(1))


def test_onnx_layer_norm_on_a_dynamic_width_takes_its_size_from_its_scale(tmp_path):
    """onnx2torch sizes LayerNormalization from the inferred input shape (0 where it is dynamic); the scale says it."""
    torch.manual_seed(0)
    module = _TokensWithLayerNorm().eval()
    x = torch.randn(2, 1, 28, 28)
    model = load_model(f"onnx:{_dynamic_batch_onnx(module, x, tmp_path / 'tokens.onnx')}")
    with torch.no_grad():
        assert torch.allclose(model.module(x), module(x), atol=1e-5)
    assert {"patch/Conv", "head/Gemm"} <= set(weight_layers(model.module))  # onnx2torch names the nodes


def test_onnx_gelu_constants_survive_w8a8_and_core_ml_export(tmp_path):
    """ONNX writes GELU as x·0.5·(1 + erf(x / √2)) with 0-d constants; W8A8 quantizes add / mul / div inputs,
    constants included, and Core ML cannot store a quantized 0-d constant — the module-level view makes them 1-D."""
    from core.specs import QuantizeActivationsSpec

    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(8, 10)).eval()
    x = torch.randn(2, 1, 28, 28)
    model = load_model(f"onnx:{_dynamic_batch_onnx(module, x, tmp_path / 'gelu.onnx')}")
    result = compress(model=model, spec=QuantizeActivationsSpec(calibration_samples=8), dataset=None)
    with torch.no_grad():
        assert result.module(x).shape == (2, 10)
    package = export_coreml(module=result.module, input_shape=model.input_shape, path=tmp_path / "gelu.mlpackage")
    assert (package / "Data").is_dir()
