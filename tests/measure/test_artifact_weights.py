"""The exported artifact's weights, decoded, equal the weights the accuracy was measured with — for every method;
a corrupted artifact is caught and the damaged layer named; a run's record carries the verdict."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from core.compress import compress
from core.data import Dataset, load_bundled_subset
from core.export import artifact_for
from core.measure.artifact_weights import SCALED_ULPS, ArtifactReadError, check_artifact_weights
from core.measure.latency import quantized_engine
from core.specs import (
    PalettizeSpec,
    PipelineSpec,
    PruneSpec,
    QuantizeActivationsSpec,
    QuantizeWeightsSpec,
    TorchDynamicSpec,
    TorchStaticSpec,
)
from tests.conftest import tiny_model

torch.set_num_threads(2)

WEIGHT_LAYERS = ["conv1", "conv2", "conv3", "conv4", "fc1", "fc2"]  # TinyNet's ≥ 2-D weights
# spec, and the largest difference allowed in fp16 units in the last place: 0 where the artifact stores the values
# themselves (LUT entries, sparse non-zeros, dense fp16), SCALED_ULPS where it multiplies integers by an fp16 scale
CASES = {
    "palettize 4-bit per tensor": (PalettizeSpec(n_bits=4), 0.0),
    "palettize 2-bit per grouped channel": (PalettizeSpec(n_bits=2, granularity="per_grouped_channel", group_size=8), 0.0),
    "palettize vector (cluster_dim 2)": (PalettizeSpec(n_bits=4, cluster_dim=2), 0.0),
    "palettize int8 LUT": (PalettizeSpec(n_bits=4, lut_dtype="int8"), SCALED_ULPS),
    "palettize per-channel scale": (
        PalettizeSpec(n_bits=4, granularity="per_grouped_channel", group_size=8, enable_per_channel_scale=True),
        SCALED_ULPS,
    ),
    "quantize_weights int8 per channel": (QuantizeWeightsSpec(dtype="int8"), SCALED_ULPS),
    "quantize_weights int4 per block": (QuantizeWeightsSpec(dtype="int4", granularity="per_block", block_size=16), SCALED_ULPS),
    "W8A8": (QuantizeActivationsSpec(calibration_samples=32), SCALED_ULPS),
    "prune 50 %": (PruneSpec(target_sparsity=0.5), 0.0),
    "prune → palettize": (PipelineSpec((PruneSpec(target_sparsity=0.5), PalettizeSpec(n_bits=4))), 0.0),
    "prune → quantize_weights": (PipelineSpec((PruneSpec(target_sparsity=0.5), QuantizeWeightsSpec())), SCALED_ULPS),
    "torch_dynamic": (TorchDynamicSpec(), None),
    "torch_static": (TorchStaticSpec(calibration_samples=32), None),
}


@pytest.fixture(scope="module")
def fashion() -> Dataset:
    return load_bundled_subset()


def _exported(spec, dataset: Dataset, out_dir: Path):
    model = tiny_model()
    result = compress(model=model, spec=spec, dataset=dataset)
    with quantized_engine(result.quantized_engine):
        path, kind = artifact_for(result, input_shape=model.input_shape, out_dir=out_dir)
    return result, path, kind


def _check(result, path: Path, kind: str):
    with quantized_engine(result.quantized_engine):
        return check_artifact_weights(module=result.module, artifact_path=path, artifact_kind=kind,
                                      payload_module=result.payload_module)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_artifact_weights_equal_the_evaluated_weights(case, fashion, tmp_path):
    spec, ulps_allowed = CASES[case]
    result, path, kind = _exported(spec, fashion, tmp_path)
    check = _check(result, path, kind)
    assert check.match, check.summary()
    assert sorted(layer.layer for layer in check.layers) == WEIGHT_LAYERS  # every weight layer compared, none missed
    assert not check.unpaired_artifact_weights
    if kind == "torchscript":
        assert check.max_abs_diff == 0.0  # the same int8 values and scales, dequantized
    else:
        assert ulps_allowed is not None and check.max_ulps <= ulps_allowed, check.summary()
        # the converter folds bn1 / bn2 into conv1 / conv2 where they stay dense: named, and compared with the fold
        folded = {layer.layer: layer.folded_batchnorm for layer in check.layers if layer.folded_batchnorm}
        assert folded in ({}, {"conv1": "bn1", "conv2": "bn2"})
        if folded:
            assert "folded BatchNorm into conv1 (bn1), conv2 (bn2)" in check.summary()
    print(f"{case}: {kind}, max abs diff {check.max_abs_diff:.3g}, max fp16 ulps {check.max_ulps}, "
          f"{check.seconds * 1000:.0f} ms")


def _blob_data_offset(package: Path, op_name: str, param: str) -> tuple[Path, int, int]:
    """(weight.bin, data offset, data bytes) of the blob behind `op_name`'s input `param` ("val" for a const) in a
    saved package, from the blob's header."""
    from coremltools.models.utils import load_spec

    spec = load_spec(str(package))
    weight_file = next(package.rglob("weight.bin"))
    data = weight_file.read_bytes()
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                if not op.outputs or op.outputs[0].name != op_name:
                    continue
                values = [op.attributes["val"]] if param == "val" else [
                    binding.value for binding in op.inputs[param].arguments if binding.WhichOneof("binding") == "value"]
                header = values[0].blobFileValue.offset
                sentinel, _dtype, size, offset = struct.unpack_from("<IIQQ", data, header)
                assert sentinel == 0xDEADBEEF
                return weight_file, offset, size
    raise AssertionError(f"no op {op_name} in {package}")


def _flip_bytes(weight_file: Path, offset: int, size: int) -> None:
    data = bytearray(weight_file.read_bytes())
    data[offset : offset + size] = bytes(b ^ 0x5A for b in data[offset : offset + size])
    weight_file.write_bytes(bytes(data))


@pytest.mark.parametrize("op_name, param, layer", [("conv4_weight_cast_fp16", "indices", "conv4"),
                                                   ("fc1_weight_to_fp16", "val", "fc1")])
@pytest.mark.slow
def test_a_corrupted_weight_blob_is_caught_and_named(op_name, param, layer, fashion, tmp_path):
    """LUT indices of a palettized layer, and a dense fp16 weight, edited in weight.bin after export."""
    result, path, kind = _exported(PalettizeSpec(n_bits=4), fashion, tmp_path)
    assert _check(result, path, kind).match
    _flip_bytes(*_blob_data_offset(path, op_name, param))
    check = _check(result, path, kind)
    assert not check.match
    assert check.mismatched == [layer], check.summary()
    assert f"MISMATCH in 1 layer(s): {layer}" in check.summary()
    assert check.to_dict()["match"] is False and check.to_dict()["mismatched"] == [layer]


@pytest.mark.slow
def test_other_weights_swapped_in_before_export_are_caught(fashion, tmp_path):
    """The module that was evaluated is not the one exported: every compressed layer differs."""
    _evaluated, path, kind = _exported(QuantizeWeightsSpec(dtype="int8"), fashion, tmp_path / "a")
    other = compress(model=tiny_model(seed=1), spec=QuantizeWeightsSpec(dtype="int8"), dataset=fashion)
    check = check_artifact_weights(module=other.module, artifact_path=path, artifact_kind=kind)
    assert not check.match and set(check.mismatched) == set(WEIGHT_LAYERS)


def test_a_corrupted_torchscript_int8_weight_is_caught(fashion, tmp_path):
    result, path, kind = _exported(TorchDynamicSpec(), fashion, tmp_path)
    program = torch.jit.load(str(path))
    packed = program.fc1._packed_params._packed_params
    weight, bias = torch.ops.quantized.linear_unpack(packed)
    values = weight.dequantize()
    values[0, 0] += 20 * float(values.abs().max())  # one weight moved far off its value (clamped to the int8 range)
    if weight.qscheme() == torch.per_channel_affine:
        changed = torch.quantize_per_channel(values, weight.q_per_channel_scales(), weight.q_per_channel_zero_points(),
                                             weight.q_per_channel_axis(), torch.qint8)
    else:
        changed = torch.quantize_per_tensor(values, weight.q_scale(), weight.q_zero_point(), torch.qint8)
    program.fc1._packed_params._packed_params = torch.ops.quantized.linear_prepack(changed, bias)
    torch.jit.save(program, str(path))
    check = _check(result, path, kind)
    assert check.mismatched == ["fc1"], check.summary()
    assert check.max_abs_diff > 0


def test_an_unreadable_artifact_is_a_clear_error(tmp_path):
    broken = tmp_path / "model.pt"
    broken.write_bytes(b"not a TorchScript archive")
    with pytest.raises(ArtifactReadError, match=r"model\.pt is not a loadable TorchScript file"):
        check_artifact_weights(module=torch.nn.Linear(2, 2), artifact_path=broken, artifact_kind="torchscript")


@pytest.mark.slow
def test_a_run_records_the_verdict_and_clocks_it(fashion, tmp_path):
    from core.experiment import run_experiment
    from core.experiment_options import ExperimentOptions

    record = run_experiment(
        model=tiny_model(), spec=PalettizeSpec(n_bits=4), dataset=fashion, artifacts_dir=tmp_path / "run",
        options=ExperimentOptions(eval_limit=64, measure_latency=False, measure_memory=False,
                                  cache_dir=tmp_path / "cache"),
    )
    assert record["artifact_weights_match"] is True
    check = record["artifact_weights_check"]
    assert check["layers_compared"] == len(WEIGHT_LAYERS) and check["mismatched"] == []
    assert check["summary"].startswith("6 weight layers of the mlpackage compared")
    phases = record["phase_seconds"]
    assert "artifact_check" in phases and phases["artifact_check"] < max(phases["export"], 0.5)
    assert np.isfinite(check["max_abs_diff"])


@pytest.mark.slow
def test_tied_weights_stored_once_are_compared_once_and_a_missing_layer_is_named(tmp_path):
    from core.export import export_coreml

    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first, self.second = torch.nn.Linear(32, 32), torch.nn.Linear(32, 32)
            self.second.weight = self.first.weight  # one parameter, two layers

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.second(torch.relu(self.first(x)))

    torch.manual_seed(0)
    module = Tied().eval()
    path = export_coreml(module=module, input_shape=(32,), path=tmp_path / "tied.mlpackage")
    check = check_artifact_weights(module=module, artifact_path=path, artifact_kind="mlpackage")
    assert check.match, check.summary()
    assert [c.paired_by for c in check.layers] == ["name", "the weight it shares with first"]
    extra = torch.nn.Sequential(module, torch.nn.Linear(32, 7)).eval()  # a layer the artifact does not hold
    check = check_artifact_weights(module=extra, artifact_path=path, artifact_kind="mlpackage")
    assert check.mismatched == ["1"] and [c.paired_by for c in check.layers if not c.ok] == ["not found"]


class _SqueezeExcite(torch.nn.Module):
    """A MobileNetV3-style block: the squeeze-excite gate ends in fc2 → hard sigmoid, which ONNX writes as
    HardSigmoid(alpha=1/6) and the Core ML converter folds into fc2's (small, dense) weight."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.fc1 = torch.nn.Conv2d(16, 4, 1)
        self.fc2 = torch.nn.Conv2d(4, 16, 1)
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        gate = torch.nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return self.head((x * gate).mean((2, 3)))


@pytest.fixture(scope="module")
def onnx_squeeze_excite(tmp_path_factory):
    """(result, artifact path) of the block exported to ONNX, loaded through the onnx: route, palettized, exported."""
    import warnings

    from core.models.graph_forms import load_onnx

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("onnx") / "se.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_SqueezeExcite().eval(), (torch.randn(1, 3, 16, 16),), str(path), input_names=["input"],
                          output_names=["logits"], opset_version=17, dynamo=False)
    model = load_onnx(path)
    result = compress(model=model, spec=PalettizeSpec(n_bits=4), dataset=None)
    artifact, _kind = artifact_for(result, input_shape=model.input_shape, out_dir=path.parent / "out")
    return result, artifact


def _fc2(module) -> tuple[str, torch.nn.Module]:
    return next((name, layer) for name, layer in module.named_modules() if name.endswith("fc2/Conv"))


def test_a_constant_multiply_folded_into_a_weight_is_recognised_and_named(onnx_squeeze_excite):
    result, artifact = onnx_squeeze_excite
    check = check_artifact_weights(module=result.module, artifact_path=artifact, artifact_kind="mlpackage")
    assert check.match, check.summary()
    fc2, _layer = _fc2(result.module)
    comparison = next(c for c in check.layers if c.layer == fc2)
    assert comparison.folded_constant is not None and comparison.folded_constant.startswith("scaled by 0.1667: alpha")
    assert "HardSigmoid" in comparison.folded_constant
    assert f"folded a constant multiply into {fc2} (scaled by 0.1667" in check.summary()
    assert check.to_dict()["folded_constants"] == check.scaled


@pytest.mark.parametrize("change", ["times 2", "noise"])
def test_a_weight_that_is_not_the_graphs_constant_multiple_still_mismatches(onnx_squeeze_excite, change):
    """The fold is only accepted for the constant the graph applies: another scale, or other values, fail."""
    import copy

    result, artifact = onnx_squeeze_excite
    module = copy.deepcopy(result.module)
    fc2, layer = _fc2(module)
    with torch.no_grad():
        if change == "times 2":
            layer.weight.mul_(2.0)
        else:
            layer.weight.add_(0.05 * torch.randn_like(layer.weight))
    check = check_artifact_weights(module=module, artifact_path=artifact, artifact_kind="mlpackage")
    assert not check.match and check.mismatched == [fc2], check.summary()


def test_pairing_by_onnx_node_path_and_exact_matches_before_closest_misses():
    """onnx2torch names layers by node path (s4/b4/conv1/conv/Conv), which the converter writes with underscores;
    and a layer whose own weight is missing must not take a same-shaped weight another layer matches exactly
    (timm regnetx_002 from ONNX: 40 same-shaped convs, several mis-paired)."""
    from core.measure.artifact_weights import StoredWeight, pair_weights

    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal((8, 8, 1, 1)).astype(np.float16).astype(np.float32) for _ in range(3))
    stored = {"s4_b4_conv1_conv_Conv_weight_cast_fp16": StoredWeight(a), "unnamed_const": StoredWeight(c)}
    evaluated = {"s4/b4/conv1/conv/Conv": a, "s4/b5/conv1/conv/Conv": b, "s4/b6/conv1/conv/Conv": c}
    layers, unpaired = pair_weights(evaluated, stored)
    by_layer = {layer.layer: layer for layer in layers}
    assert by_layer["s4/b4/conv1/conv/Conv"].paired_by == "name" and by_layer["s4/b4/conv1/conv/Conv"].ok
    assert by_layer["s4/b6/conv1/conv/Conv"].artifact_name == "unnamed_const" and by_layer["s4/b6/conv1/conv/Conv"].ok
    assert by_layer["s4/b5/conv1/conv/Conv"].paired_by == "not found" and not unpaired
