"""W8A8 with LinearQuantizer: int8 weights per channel and quantized activations from real calibration images."""

from __future__ import annotations

import pytest
import torch

from core.compress import compress
from core.compress.layers import locate, weight_of
from core.specs import QuantizeActivationsSpec
from tests.conftest import assert_unchanged, max_distinct_per_group, state_snapshot


def _activation_quantizers(module) -> int:
    return sum(1 for node in module.graph.nodes if "quantize_per_tensor" in str(node.target))


def test_calibration_quantizes_weights_and_activations(tiny, fashion):
    snapshot = state_snapshot(tiny.module)
    result = compress(model=tiny, spec=QuantizeActivationsSpec(calibration_samples=64), dataset=fashion)
    assert_unchanged(tiny.module, snapshot)
    assert _activation_quantizers(result.module) >= 5
    assert "64 class-balanced images" in result.calibration_source
    for report in result.layers:
        assert report.compressed and report.bits == 8 and report.granularity == "per_channel"
        assert max_distinct_per_group(weight_of(locate(result.module, report.name)), 1) <= 256
        assert report.snr_db > 35.0
    images, _ = next(iter(fashion.batches(fashion.eval_split(limit=64), batch_size=64)))
    with torch.no_grad():
        agreement = (result.module(images).argmax(1) == tiny.module(images).argmax(1)).float().mean()
    assert agreement > 0.8


def test_weight_threshold_keeps_small_layers_float(tiny, fashion):
    result = compress(model=tiny, spec=QuantizeActivationsSpec(calibration_samples=32, weight_threshold=1000), dataset=fashion)
    by_name = {r.name: r for r in result.layers}
    assert not by_name["conv1"].compressed and by_name["conv1"].reason.startswith("below weight_threshold")
    assert not by_name["fc2"].compressed
    assert by_name["conv4"].compressed


@pytest.mark.slow
def test_fine_tune_qat(tiny, fashion):
    spec = QuantizeActivationsSpec(workflow="fine_tune", max_steps=3, batch_size=32, train_limit=128)
    result = compress(model=tiny, spec=spec, dataset=fashion)
    assert _activation_quantizers(result.module) >= 5
    assert all(r.compressed for r in result.layers)
    assert any("3 steps" in note for note in result.notes)


def _relu6_net():
    from torch import nn

    from tests.conftest import loaded

    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),  # depthwise
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )
    return loaded(module, label="relu6")


def test_conv_bn_relu6_layers_are_reported_with_their_weight_granularity(fashion):
    """coremltools wraps Conv+BN+ReLU6 as `<name>.conv` + `<name>.act`; its int8 weights are reported, not 'skipped'."""
    model = _relu6_net()
    for per_channel, granularity, scales in ((True, "per_channel", 8), (False, "per_tensor", 1)):
        spec = QuantizeActivationsSpec(calibration_samples=16, weight_per_channel=per_channel)
        result = compress(model=model, spec=spec, dataset=fashion)
        assert result.library_config["config"]["global_config"]["weight_per_channel"] is per_channel
        by_name = {r.name: r for r in result.layers}
        for name in ("0", "3"):
            report = by_name[name]
            assert report.compressed, f"{name}: {report.reason}"
            assert (report.granularity, report.n_scales) == (granularity, scales)
            assert report.extra["batchnorm_folded"] == str(int(name) + 1)
        assert ("per-tensor weights" in spec.summary()) is not per_channel


def test_weight_per_channel_override_applies_to_its_layer_only(fashion):
    spec = QuantizeActivationsSpec(calibration_samples=16, overrides={"^3$": {"weight_per_channel": False}})
    result = compress(model=_relu6_net(), spec=spec, dataset=fashion)
    by_name = {r.name: r for r in result.layers}
    assert by_name["0"].granularity == "per_channel" and by_name["3"].granularity == "per_tensor"


def _stochastic_depth_net():
    from torch import nn
    from torchvision.ops import StochasticDepth

    from tests.conftest import loaded

    class Residual(nn.Module):  # ConvNeXt's block shape: x + StochasticDepth(branch(x))
        def __init__(self) -> None:
            super().__init__()
            self.branch = nn.Conv2d(8, 8, 3, padding=1)
            self.drop = StochasticDepth(0.5, "row")

        def forward(self, x):
            return x + self.drop(self.branch(x))

    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), Residual(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(8, 10))
    return loaded(module, label="stochastic depth")


@pytest.mark.parametrize("workflow", ["calibration", "fine_tune"])
def test_stochastic_depth_does_not_stay_random_in_the_quantized_graph(fashion, tmp_path, workflow):
    """FX graph mode traces QAT in training mode; a StochasticDepth (not a torch.nn leaf) traced so would drop its
    residual branch at random in every inference afterwards — and Core ML cannot convert its bernoulli_."""
    from core.export import export_coreml

    model = _stochastic_depth_net()
    extra = {"max_steps": 2, "batch_size": 16, "train_limit": 32} if workflow == "fine_tune" else {}
    result = compress(model=model, spec=QuantizeActivationsSpec(calibration_samples=16, workflow=workflow, **extra),
                      dataset=fashion)
    x = torch.randn(64, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(result.module(x), result.module(x))  # no random drop left
    assert any("1 module(s) with training-only randomness" in note and "1.drop" in note for note in result.notes)
    assert model.module[1].drop.train().training  # the input model was not changed
    export_coreml(module=result.module, input_shape=(1, 28, 28), path=tmp_path / "w8a8.mlpackage")


def test_linear_gelu_layers_are_reported_as_the_int8_layers_they_become(fashion):
    """coremltools wraps Linear+GELU (a transformer MLP's fc1) as `<name>.linear` + `<name>.act`: reported as
    compressed with its int8 weights, not 'skipped' — else the size report counts it at fp16 while the artifact
    stores int8 (a ViT's module-route W8A8 read 0.80× its theoretical size)."""
    from torch import nn

    from tests.conftest import loaded

    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.GELU(), nn.Linear(64, 10))
    result = compress(model=loaded(module, label="mlp"), spec=QuantizeActivationsSpec(calibration_samples=16),
                      dataset=fashion)
    by_name = {r.name: r for r in result.layers}
    assert by_name["1"].compressed, by_name["1"].reason
    assert (by_name["1"].granularity, by_name["1"].n_scales) == ("per_channel", 64)
    assert by_name["3"].compressed


def test_a_library_linear_subclass_is_quantized_as_the_linear_it_is(fashion, tmp_path):
    """Traced into, its weight would become a bare tensor quantized per tensor — unreported, and unlike what the
    weights check reads (timm's MobileNetV3 classifier: artifact_weights_match false)."""
    from torch import nn

    from core.export import export_coreml
    from core.measure.artifact_weights import check_artifact_weights
    from tests.conftest import LibraryLinear, loaded

    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), LibraryLinear(64, 10))
    result = compress(model=loaded(module, label="library linear"), spec=QuantizeActivationsSpec(calibration_samples=16),
                      dataset=fashion)
    by_name = {r.name: r for r in result.layers}
    assert by_name["3"].compressed and (by_name["3"].granularity, by_name["3"].n_scales) == ("per_channel", 10)
    assert type(module[3]) is LibraryLinear  # the caller's model keeps its class
    assert any("library subclass of nn.Linear" in note for note in result.notes)
    package = export_coreml(module=result.module, input_shape=(1, 28, 28), path=tmp_path / "lib.mlpackage")
    assert check_artifact_weights(module=result.module, artifact_path=package, artifact_kind="mlpackage").match
