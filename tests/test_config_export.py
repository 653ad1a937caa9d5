"""Recipes: the config dicts load with the real coremltools config classes; the snippet runs outside the app."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.config_export import config_yaml, coremltools_config, python_snippet
from core.specs import (
    PalettizeSpec,
    PipelineSpec,
    PruneSpec,
    QuantizeActivationsSpec,
    QuantizeWeightsSpec,
    TorchDynamicSpec,
    TorchStaticSpec,
)

TORCH_SIDE_SPECS = [
    PalettizeSpec(n_bits=4, granularity="per_grouped_channel", group_size=8, overrides={"fc": None, "conv1": {"n_bits": 6}}),
    PalettizeSpec(n_bits=3, lut_dtype="int8", cluster_dim=2),
    PalettizeSpec(workflow="calibration", calibration_samples=64),
    PalettizeSpec(n_bits=2, workflow="fine_tune", enable_per_channel_scale=True),
    QuantizeWeightsSpec(dtype="int4", granularity="per_block", block_size=32, mode="asymmetric"),
    QuantizeWeightsSpec(workflow="calibration", dtype="int4"),
    QuantizeWeightsSpec(workflow="fine_tune"),
    QuantizeActivationsSpec(),
    QuantizeActivationsSpec(workflow="fine_tune"),
    PruneSpec(target_sparsity=0.8, structure="block", block_size=4),
    PruneSpec(structure="n_m", n_m=(3, 4)),
    PruneSpec(workflow="fine_tune", target_sparsity=0.9),
]


@pytest.mark.parametrize("spec", TORCH_SIDE_SPECS, ids=lambda s: s.summary())
def test_config_dict_is_what_the_coremltools_class_accepts(spec):
    recipe = coremltools_config(spec)
    module_name, _, class_name = recipe["config_class"].rpartition(".")
    config_class = getattr(importlib.import_module(module_name), class_name)
    config = config_class.from_dict(recipe["config"])
    assert config.global_config is not None
    assert yaml.safe_load(config_yaml(spec)) == recipe


def test_overrides_become_fullmatch_module_name_configs():
    recipe = coremltools_config(PalettizeSpec(overrides={"fc": None, "conv1": {"n_bits": 6}}))
    names = recipe["config"]["module_name_configs"]
    assert names == {".*(?:fc).*": None, ".*(?:conv1).*": {**recipe["config"]["global_config"], "n_bits": 6}}


def test_coreml_side_modes_and_torch_ao():
    import coremltools.optimize.coreml as cto

    uniform = coremltools_config(PalettizeSpec(mode="uniform", n_bits=4))
    assert uniform["api"] == "coremltools.optimize.coreml.palettize_weights"
    cto.OptimizationConfig.from_dict(uniform["config"])
    assert coremltools_config(TorchDynamicSpec(dtype="fp16"))["config"]["dtype"] == "float16"
    assert coremltools_config(TorchStaticSpec(backend="qnnpack"))["config"]["backend"] == "qnnpack"
    pipeline = coremltools_config(PipelineSpec((PruneSpec(), PalettizeSpec())))
    assert [step["api"].rsplit(".", 1)[1] for step in pipeline["pipeline"]] == ["MagnitudePruner", "PostTrainingPalettizer"]


@pytest.mark.parametrize(
    "spec",
    [*TORCH_SIDE_SPECS, PalettizeSpec(mode="uniform"), TorchDynamicSpec(), TorchStaticSpec(),
     PipelineSpec((PruneSpec(), QuantizeWeightsSpec(dtype="int4")))],
    ids=lambda s: s.summary(),
)
def test_snippets_are_valid_python(spec):
    code = python_snippet(spec=spec, source_id="torchvision:resnet18")
    compile(code, "snippet", "exec")
    assert spec.summary() in code


@pytest.mark.slow
def test_snippet_runs_outside_the_app(tmp_path):
    """Run the generated script in a fresh interpreter: it palettizes and writes a compressed .mlpackage."""
    code = python_snippet(
        spec=PalettizeSpec(n_bits=2, weight_threshold=4096, overrides={r"features\.0$": None}),
        source_id="torchvision:squeezenet1_1",
    )
    script = tmp_path / "recipe.py"
    script.write_text(code)
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    package = tmp_path / "compressed.mlpackage"
    size = sum(p.stat().st_size for p in Path(package).rglob("*") if p.is_file())
    fp16_bytes = 1_235_496 * 2  # squeezenet1_1 parameters at fp16
    assert 0 < size < fp16_bytes / 3  # 2-bit indices for every layer above 4,096 weights


@pytest.mark.slow
def test_snippet_converts_a_graph_with_shape_arithmetic_through_torch_export(tmp_path):
    """ShuffleNet's channel shuffle computes shapes in the graph, which the TorchScript frontend of ct.convert
    fails on under NumPy >= 2.4; the snippet converts through torch.export and keeps the 4-bit palettes."""
    code = python_snippet(spec=PalettizeSpec(n_bits=4), source_id="torchvision:shufflenet_v2_x1_0")
    assert "torch.export.export(model.eval(), (example,))" in code and "torch.jit.trace" not in code
    script = tmp_path / "recipe.py"
    script.write_text(code)
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    from core.measure.artifact_weights import mlpackage_weights

    stored = mlpackage_weights(tmp_path / "compressed.mlpackage")
    size = sum(p.stat().st_size for p in (tmp_path / "compressed.mlpackage").rglob("*") if p.is_file())
    assert size < 2_278_604 * 2 / 2.5  # shufflenet_v2_x1_0's parameters at fp16, palettized to 4 bits
    assert len(stored) >= 50  # every conv and the classifier were written as weights the app can decode


def test_w8a8_snippets_convert_from_a_trace_and_the_others_through_torch_export():
    assert "torch.jit.trace" in python_snippet(spec=QuantizeActivationsSpec(), source_id="torchvision:resnet18")
    for spec in (PalettizeSpec(), QuantizeWeightsSpec(), PruneSpec(), PipelineSpec((PruneSpec(), PalettizeSpec()))):
        code = python_snippet(spec=spec, source_id="torchvision:resnet18")
        assert "torch.export.export(model.eval(), (example,)).run_decompositions({})" in code, spec.summary()
        assert "torch.jit.trace" not in code, spec.summary()


def test_snippet_builds_timm_and_torchvision_models_at_their_own_input_size():
    timm_code = python_snippet(spec=PalettizeSpec(), source_id="timm:resnet10t")
    assert "model = timm.create_model('resnet10t', pretrained=False)" in timm_code
    assert "example = torch.randn(1, 3, 176, 176)" in timm_code  # timm's data config, not a guessed 224
    compile(timm_code, "snippet", "exec")
    assert "example = torch.randn(1, 3, 300, 300)" in python_snippet(spec=PalettizeSpec(),
                                                                   source_id="torchvision:efficientnet_b3")
