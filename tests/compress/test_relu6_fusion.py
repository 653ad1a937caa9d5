"""ReLU6 inside the fused int8 conv kernel: Conv(+BN)→ReLU6 / hardtanh(0, 6) becomes one quantized ConvReLU2d whose
output is quantized with scale 6/255 and zero point 0 (the kernel's clamp is the ReLU6), for calibration and QAT."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.ao.nn.intrinsic import quantized as nniq

from core.compress import compress
from core.compress.int8_forms import already_converted, choose_int8_form, cpu_int8_features
from core.compress.torch_ao import RELU6_OUTPUT_SCALE, fx_convert, fx_prepare, fx_relu6_fused
from core.compress.torch_static import FBGEMM_SATURATES
from core.measure.latency import LatencySettings, quantized_engine
from core.measure.quality import snr_db
from core.paths import HOME_ENV
from core.specs import TorchStaticSpec
from tests.conftest import loaded

CPU = cpu_int8_features()
pytestmark = pytest.mark.skipif(
    not CPU.is_x86 or not (CPU.vnni or CPU.amx), reason="ReLU6 fusion runs on x86 CPUs with VNNI/AMX"
)
CLAMPS = (nn.ReLU6, nn.Hardtanh)


class Relu6Net(nn.Module):
    """Conv+BN+ReLU6, a depthwise Conv+BN+hardtanh(0, 6) module, a Conv+F.relu6, and one ReLU6 after a pool (not
    after a conv: it stays a separate op), as in mobilenet blocks."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.conv1, self.bn1, self.act1 = nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(inplace=True)
            self.dw, self.bn2, self.act2 = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16), nn.Hardtanh(0.0, 6.0)
            self.conv3 = nn.Conv2d(16, 32, 1)
            self.pool = nn.MaxPool2d(2)
            self.after_pool = nn.ReLU6()
            self.fc = nn.Linear(32, 10)
            self.conv1.weight.data.mul_(2)
            for bn in (self.bn1, self.bn2):  # a spread of scales and shifts: a fifth of the activations pass 6
                bn.weight.data.copy_(torch.rand(16) * 4 + 2)
                bn.bias.data.copy_(torch.randn(16) + 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.dw(x)))
        x = nn.functional.relu6(self.conv3(x))
        x = self.after_pool(self.pool(x) - 1.0)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture(autouse=True)
def _own_home(tmp_path, monkeypatch):
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))


def _clamp_ops(graph_module: torch.fx.GraphModule) -> int:
    """ReLU6 / hardtanh left as ops of their own in a converted FX graph."""
    modules = sum(
        1 for n in graph_module.graph.nodes if n.op == "call_module" and isinstance(graph_module.get_submodule(n.target), CLAMPS)
    )
    functions = sum(
        1 for n in graph_module.graph.nodes
        if n.op == "call_function" and getattr(n.target, "__name__", "") in ("relu6", "hardtanh", "hardtanh_")
    )
    return modules + functions


def _fixed_relu6_convs(graph_module: nn.Module) -> list[str]:
    return [
        name for name, m in graph_module.named_modules()
        if isinstance(m, nniq.ConvReLU2d) and m.scale == pytest.approx(RELU6_OUTPUT_SCALE) and m.zero_point == 0
    ]


def _images(fashion, *, size: int, calibration: bool) -> torch.Tensor:
    split = fashion.calibration_split(size=size) if calibration else fashion.eval_split(limit=size)
    images, _ = next(iter(fashion.batches(split, batch_size=size)))
    return images


def _int8(module: nn.Module, calibration: torch.Tensor, *, fuse: bool, engine: str = "x86") -> nn.Module:
    prepared = fx_prepare(
        module, qat=False, backend="x86", per_channel=True, skip_layers=[], example_inputs=(calibration[:1],),
        fuse_relu6=fuse,
    )
    with torch.no_grad():
        prepared(calibration)
    with quantized_engine(engine):
        return fx_convert(copy.deepcopy(prepared))


@pytest.mark.slow
def test_relu6_runs_inside_the_conv_kernel_and_predicts_like_the_unfused_graph(fashion):
    model = Relu6Net().eval()
    state = copy.deepcopy(model.state_dict())
    calibration, images = _images(fashion, size=128, calibration=True), _images(fashion, size=512, calibration=False)
    with torch.no_grad():
        reference = model(images)
        pre_act = model.bn1(model.conv1(images))
    assert (pre_act > 6).float().mean() > 0.05  # the upper clamp matters on this data

    unfused, fused = _int8(model, calibration, fuse=False), _int8(model, calibration, fuse=True)
    assert _clamp_ops(unfused) == 4
    assert _clamp_ops(fused) == 1  # only the ReLU6 after the pool, which follows no conv
    assert sorted(_fixed_relu6_convs(fused)) == ["conv1", "conv3", "dw"] and fx_relu6_fused(fused) == ["conv1", "dw", "conv3"]
    with quantized_engine("x86"), torch.inference_mode():
        out_unfused, out_fused = unfused(images), fused(images)
    agreement = (out_fused.argmax(1) == out_unfused.argmax(1)).float().mean().item()
    assert agreement >= 0.97
    assert snr_db(reference=reference, candidate=out_fused) >= snr_db(reference=reference, candidate=out_unfused) - 0.5
    # the caller's model is untouched: same modules, same weights
    assert isinstance(model.act1, nn.ReLU6) and isinstance(model.act2, nn.Hardtanh)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_a_skipped_conv_keeps_its_float_relu6():
    model = Relu6Net().eval()
    calibration = torch.randn(16, 1, 28, 28)
    prepared = fx_prepare(
        model, qat=False, backend="x86", per_channel=True, skip_layers=["dw"], example_inputs=(calibration[:1],),
        fuse_relu6=True,
    )
    assert fx_relu6_fused(prepared) == ["conv1", "conv3"]
    prepared(calibration)
    with quantized_engine("x86"), torch.inference_mode():
        converted = fx_convert(prepared)
        assert isinstance(converted.act2, nn.Hardtanh) and isinstance(converted.dw, nn.Conv2d)
        assert torch.isfinite(converted(calibration)).all()


@pytest.mark.slow
def test_the_product_fuses_for_calibration_and_qat(fashion):
    model = loaded(Relu6Net(), label="relu6net")
    spec = {"engine": "x86", "graph": "graph_module"}
    calibrated = compress(model=model, spec=TorchStaticSpec(calibration_samples=64, **spec), dataset=fashion)
    assert _clamp_ops(calibrated.module) == 1 and len(_fixed_relu6_convs(calibrated.module)) == 3
    assert any("3 ReLU6 inside their conv's kernel" in note for note in calibrated.notes)
    assert isinstance(model.module.act1, nn.ReLU6)  # compress never changes its input

    qat_spec = TorchStaticSpec(workflow="fine_tune", max_steps=2, batch_size=16, train_limit=64, engine="onednn", graph="graph_module")
    trained = compress(model=model, spec=qat_spec, dataset=fashion)
    assert _clamp_ops(trained.module) == 1 and len(_fixed_relu6_convs(trained.module)) == 3
    images = _images(fashion, size=64, calibration=False)
    with quantized_engine("onednn"), torch.inference_mode():
        assert torch.isfinite(trained.module(images)).all()

    # Forcing the fbgemm engine keeps ReLU6 separate (its depthwise kernel would saturate on 0..255 inputs).
    forced = compress(model=model, spec=TorchStaticSpec(calibration_samples=32, engine="fbgemm", graph="graph_module"), dataset=fashion)
    assert _clamp_ops(forced.module) == 4 and not _fixed_relu6_convs(forced.module)
    assert any("forces the fbgemm engine" in note for note in forced.notes)


def test_the_form_choice_leaves_an_engine_out_with_the_reason(fashion, tmp_path):
    model = Relu6Net().eval()
    calibration = _images(fashion, size=32, calibration=True)
    fused = _int8(model, calibration, fuse=True)
    quick = LatencySettings(threads=2, batch_sizes=(1,), warmup=1, min_repeats=3, max_repeats=4, seconds_per_batch_size=0.2)
    choice = choose_int8_form(
        prepared=fused, convert=already_converted, example=calibration[:1], graph="graph_module", settings=quick,
        cache_root=tmp_path, leave_out={"fbgemm": FBGEMM_SATURATES},
    )
    rows = {t.form.key: t for t in choice.timings}
    assert rows["fbgemm/graph_module"].error == f"left out: {FBGEMM_SATURATES}"
    assert rows["fbgemm/graph_module"].p50_ms is None and choice.winner.engine != "fbgemm"
    assert {rows["x86/graph_module"].error, rows["onednn/graph_module"].error} == {None}
