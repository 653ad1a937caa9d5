"""torch.ao FX static int8: fused Conv+BN(+ReLU), a quantized residual add, real int8 kernels; QAT; refusals; the
int8 form it runs in (engine × graph form: timed and cached, or forced)."""

from __future__ import annotations

import pytest
import torch
from torch.ao.nn import quantized as nnq

import core.compress.int8_forms as int8_forms
from core.compress import CompressionError, compress
from core.compress.int8_forms import CpuInt8Features, candidate_forms, cpu_int8_features
from core.measure.latency import quantized_engine
from core.models.sources import load_model
from core.paths import HOME_ENV
from core.specs import SpecError, TorchStaticSpec

X86 = cpu_int8_features().is_x86


@pytest.fixture(autouse=True)
def _own_home(tmp_path, monkeypatch):
    """The int8 form cache lives under the data folder: each test gets its own."""
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))


def _by_name(result):
    return {r.name: r for r in result.layers}


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "per_channel"), [("x86", True), ("qnnpack", False), ("onednn", True)])
def test_static_int8_fuses_and_quantizes_the_residual_add(tiny, fashion, backend, per_channel):
    # the form forced to the backend's engine and the GraphModule, so its modules and nodes can be inspected
    form = {} if backend == "qnnpack" else {"engine": backend, "graph": "graph_module"}
    spec = TorchStaticSpec(backend=backend, per_channel=per_channel, calibration_samples=64, **form)
    result = compress(model=tiny, spec=spec, dataset=fashion)
    module = result.module
    assert result.runs_int8_kernels
    quantized = [m for m in module.modules() if isinstance(m, nnq.Conv2d | nnq.Linear)]
    assert len(quantized) == 6
    assert all(m.weight().int_repr().dtype == torch.int8 for m in quantized)
    assert any("quantized.add" in str(node.target) for node in module.graph.nodes)  # out + identity stays int8
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())  # folded into the convs
    layers = _by_name(result)
    assert layers["conv2"].extra["batchnorm_folded"] == "bn2"
    assert layers["conv4"].granularity == ("per_channel" if per_channel else "per_tensor")
    assert all(r.compressed and r.snr_db > 30.0 for r in result.layers)
    images, _ = next(iter(fashion.batches(fashion.eval_split(limit=64), batch_size=64)))
    with quantized_engine(result.quantized_engine), torch.no_grad():
        agreement = (module(images).argmax(1) == tiny.module(images).argmax(1)).float().mean()
    assert agreement > 0.8
    if backend == "qnnpack":
        assert result.int8_form is None and result.quantized_engine == "qnnpack"
    else:
        assert result.int8_form["forced"] and result.int8_form["winner"] == f"{backend}/graph_module"
        assert result.quantized_engine == backend


def test_static_override_keeps_a_layer_float(tiny, fashion):
    spec = TorchStaticSpec(calibration_samples=32, overrides={"fc2": None}, engine="x86", graph="graph_module")
    result = compress(model=tiny, spec=spec, dataset=fashion)
    layers = _by_name(result)
    assert not layers["fc2"].compressed and "overridden" in layers["fc2"].reason
    assert isinstance(result.module.fc2, torch.nn.Linear)


@pytest.mark.slow
def test_static_fine_tune_qat(tiny, fashion):
    spec = TorchStaticSpec(
        workflow="fine_tune", max_steps=3, batch_size=32, train_limit=128, engine="onednn", graph="graph_module"
    )
    result = compress(model=tiny, spec=spec, dataset=fashion)
    assert sum(isinstance(m, nnq.Conv2d | nnq.Linear) for m in result.module.modules()) == 6
    assert result.int8_form["winner"] == "onednn/graph_module" and result.quantized_engine == "onednn"


@pytest.mark.slow
def test_static_int8_runs_on_a_torchscript_file_converted_to_a_graph(tiny, fashion, tmp_path):
    from core.models.sources import load_torchscript

    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.trace(tiny.module, torch.zeros(1, 1, 28, 28)), str(path))
    scripted = load_torchscript(path)
    assert scripted.form == "torchscript" and not scripted.is_torchscript  # converted and lifted to real layers
    result = compress(model=scripted, spec=TorchStaticSpec(calibration_samples=32), dataset=fashion)
    assert any("engine: FX graph mode on a module-level view" in note for note in result.notes)
    assert sum(r.compressed for r in result.layers) >= 4


# --------------------------------------------------------------------------- the int8 form


@pytest.mark.slow
@pytest.mark.skipif(not X86, reason="the x86 / onednn / fbgemm int8 engines need an x86-64 CPU")
def test_automatic_form_is_recorded_run_and_predicts_like_a_forced_one(fashion):
    model = load_model("sample:fashion_cnn")  # trained: predictions mean something
    auto = compress(model=model, spec=TorchStaticSpec(calibration_samples=64), dataset=fashion)
    form = auto.int8_form
    assert not form["forced"] and not form["from_cache"] and form["winner"] == f"{form['engine']}/{form['graph']}"
    assert {t["form"] for t in form["timings"]} == {f.key for f in candidate_forms()}
    assert auto.quantized_engine == form["engine"] == torch.backends.quantized.engine  # the engine actually used
    assert form["winner_ms"] == min(t["p50_ms"] for t in form["timings"] if t["p50_ms"] is not None)
    assert "int8 form: fastest of" in " ".join(auto.notes) and "artifact" in form
    assert isinstance(auto.module, torch.jit.ScriptModule) == (form["graph"] == "frozen_torchscript")

    # Another form, forced, from the same calibration: the same predictions on the bundled subset.
    other_engine = next(e for e in ("onednn", "x86", "fbgemm") if e != form["engine"])
    other_graph = "graph_module" if form["graph"] == "frozen_torchscript" else "frozen_torchscript"
    forced = compress(
        model=model, spec=TorchStaticSpec(calibration_samples=64, engine=other_engine, graph=other_graph), dataset=fashion
    )
    assert forced.int8_form["forced"] and forced.int8_form["winner"] == f"{other_engine}/{other_graph}"
    images, _ = next(iter(fashion.batches(fashion.eval_split(limit=1000), batch_size=1000)))
    with torch.inference_mode():
        with quantized_engine(auto.quantized_engine):
            auto_predictions = auto.module(images).argmax(1)
        with quantized_engine(forced.quantized_engine):
            forced_predictions = forced.module(images).argmax(1)
    assert (auto_predictions == forced_predictions).float().mean().item() >= 0.995

    # The same model again: the choice comes from the cache, nothing is timed.
    again = compress(model=model, spec=TorchStaticSpec(calibration_samples=64), dataset=fashion)
    assert again.int8_form["from_cache"] and again.int8_form["winner"] == form["winner"]


def test_forcing_an_engine_this_cpu_lacks_fails_before_calibration(tiny, fashion, monkeypatch):
    old_cpu = CpuInt8Features(model="an old SSE4 CPU", machine="x86_64", flags=("sse4_1",), known=True)
    monkeypatch.setattr(int8_forms, "cpu_int8_features", lambda: old_cpu)  # the CPU facts, not the library
    with pytest.raises(CompressionError, match=r"cannot force the int8 engine: the fbgemm int8 engine needs AVX2, "
                       r"which this CPU \(an old SSE4 CPU\) does not have\. Use engine='auto' or one of: onednn\."):
        compress(model=tiny, spec=TorchStaticSpec(engine="fbgemm", calibration_samples=32), dataset=fashion)


def test_engine_and_graph_are_validated_spec_fields():
    with pytest.raises(SpecError, match="engine must be one of auto, x86, onednn, fbgemm; got 'qnnpack'"):
        TorchStaticSpec(engine="qnnpack")
    with pytest.raises(SpecError, match="graph must be one of auto, graph_module, frozen_torchscript"):
        TorchStaticSpec(graph="onnx")
    with pytest.raises(SpecError, match="backend qnnpack runs on qnnpack only"):
        TorchStaticSpec(backend="qnnpack", engine="x86")
    spec = TorchStaticSpec(engine="onednn", graph="frozen_torchscript")
    assert TorchStaticSpec.from_dict(spec.to_dict()) == spec and "form onednn/frozen_torchscript" in spec.summary()
    assert "engine" not in TorchStaticSpec.layer_fields()  # one form per model, not per layer
    with pytest.raises(SpecError, match="unknown key"):
        TorchStaticSpec(overrides={"fc1": {"engine": "x86"}})


@pytest.mark.slow
@pytest.mark.skipif(not X86, reason="the x86 int8 engine needs an x86-64 CPU")
def test_a_frozen_form_is_the_exported_artifact_and_keeps_its_size_accounting(tiny, fashion, tmp_path):
    from core.export import artifact_for
    from core.measure.size import module_payload_size

    spec = TorchStaticSpec(calibration_samples=32, engine="x86", graph="frozen_torchscript")
    result = compress(model=tiny, spec=spec, dataset=fashion)
    assert isinstance(result.module, torch.jit.ScriptModule) and isinstance(result.payload_module, torch.fx.GraphModule)
    assert module_payload_size(result.module).total_bytes == 0  # frozen: the tensors live in the graph
    assert module_payload_size(result.payload_module).total_bytes > 0
    path, kind = artifact_for(result, input_shape=tiny.input_shape, out_dir=tmp_path)
    assert kind == "torchscript"
    images = tiny.example_input(4)
    with quantized_engine("x86"), torch.inference_mode():
        assert torch.equal(torch.jit.load(str(path))(images), result.module(images))


def test_a_library_linear_subclass_becomes_a_real_int8_layer(fashion, tmp_path):
    """timm's Linear (nn.Linear with its own forward) was traced into and left float while the report counted it as
    int8 (timm MobileNetV3-small: TorchScript artifact 1.63× its theoretical size); now it is quantized as a Linear."""
    from torch import nn

    from core.export import artifact_for
    from core.measure.artifact_weights import check_artifact_weights
    from tests.conftest import LibraryLinear, loaded

    torch.manual_seed(0)
    model = loaded(nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), LibraryLinear(64, 10)), label="lib")
    spec = TorchStaticSpec(calibration_samples=16, engine="x86", graph="graph_module")
    result = compress(model=model, spec=spec, dataset=fashion)
    assert {r.name: r.compressed for r in result.layers} == {"1": True, "3": True}
    assert type(result.module.get_submodule("3")).__module__.startswith("torch.ao.nn.quantized")  # real int8
    assert any("library subclass of nn.Linear" in note for note in result.notes)
    path, kind = artifact_for(result, input_shape=(1, 28, 28), out_dir=tmp_path)
    assert check_artifact_weights(module=result.module, artifact_path=path, artifact_kind=kind,
                                  payload_module=result.payload_module).match
