"""The method registry: one descriptor per method, and the spec → library config written once.

The central check: for every method and workflow, the recipe exported for the model (YAML, loaded back through the
named coremltools config class's ``from_dict``) equals the config the handler actually used on that model.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
import yaml
from torch import nn

from core.compress import METHODS, compress
from core.compress.layers import weight_layers
from core.compress.library_config import count_fine_tune_steps, load_config
from core.compress.prune import gradual_update_steps
from core.compress.registry import (
    BASELINE,
    PIPELINE,
    MethodDescriptor,
    method_color,
    method_descriptor,
    method_label,
    register_method,
)
from core.config_export import config_yaml, coremltools_config
from core.specs import (
    SPEC_TYPES,
    PalettizeSpec,
    PipelineSpec,
    PruneSpec,
    QuantizeActivationsSpec,
    QuantizeWeightsSpec,
    TorchDynamicSpec,
    TorchStaticSpec,
)

FAST = {"max_steps": 6, "train_limit": 192, "batch_size": 32}
# The race of int8 forms (seconds of timing per form) is tested in test_int8_forms; the configs compared here are the
# same whichever form runs them, so one form is forced.
ONE_INT8_FORM = {"engine": "x86", "graph": "graph_module"}

EVERY_METHOD_AND_WORKFLOW = [
    PalettizeSpec(n_bits=4, weight_threshold=1000, overrides={"conv3": {"n_bits": 2}, "fc1": None}),
    PalettizeSpec(n_bits=3, granularity="per_grouped_channel", group_size=8, lut_dtype="int8"),
    PalettizeSpec(mode="uniform", n_bits=4),
    PalettizeSpec(mode="unique", weight_threshold=1000),
    PalettizeSpec(workflow="calibration", calibration_samples=32),
    pytest.param(PalettizeSpec(workflow="fine_tune", n_bits=2, **FAST), marks=pytest.mark.slow),
    QuantizeWeightsSpec(dtype="int4", granularity="per_block", block_size=8, mode="asymmetric"),
    QuantizeWeightsSpec(workflow="calibration", calibration_samples=32, overrides={"conv4": {"dtype": "int4"}}),
    QuantizeWeightsSpec(workflow="fine_tune", overrides={"conv3": None}, **FAST),
    QuantizeActivationsSpec(calibration_samples=32),
    pytest.param(QuantizeActivationsSpec(workflow="fine_tune", weight_threshold=1000, **FAST), marks=pytest.mark.slow),
    QuantizeActivationsSpec(calibration_samples=32, weight_per_channel=False, overrides={"conv4": {"weight_per_channel": True}}),
    PruneSpec(target_sparsity=0.6, weight_threshold=1000),
    PruneSpec(structure="n_m", n_m=(2, 4)),
    pytest.param(PruneSpec(workflow="fine_tune", target_sparsity=0.8, structure="block", block_size=4, **FAST),
                 marks=pytest.mark.slow),
    TorchDynamicSpec(dtype="fp16"),
    TorchStaticSpec(calibration_samples=32, overrides={"conv1": None}, **ONE_INT8_FORM),
    pytest.param(TorchStaticSpec(workflow="fine_tune", per_channel=False, **FAST, **ONE_INT8_FORM), marks=pytest.mark.slow),
    PipelineSpec((PruneSpec(target_sparsity=0.5), PalettizeSpec(n_bits=4))),
    PipelineSpec((PruneSpec(target_sparsity=0.5), QuantizeWeightsSpec(dtype="int4"))),
]


def _plain(value):
    """A library config's as_dict() with tensors and enums as plain values, so two configs compare with ==."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "value") and not isinstance(value, str | int | float | bool):
        return _plain(value.value)
    return value


def _config_object_dict(entry: dict) -> dict:
    config = load_config(entry)
    if hasattr(config, "as_dict"):
        return _plain(config.as_dict())
    return {name: repr(op) for name, op in (config.op_name_configs or {}).items()} | {"global": repr(config.global_config)}


def _steps_entries(spec, used):
    steps = list(spec.steps) if isinstance(spec, PipelineSpec) else [spec]
    entries = used if isinstance(used, list) else [used]
    return list(zip(steps, entries, strict=True))


@pytest.mark.parametrize("spec", EVERY_METHOD_AND_WORKFLOW, ids=lambda s: s.summary())
def test_exported_recipe_is_the_config_the_handler_used(tiny, fashion, spec):
    result = compress(model=tiny, spec=spec, dataset=fashion)
    assert result.library_config is not None, "the handler did not record its library config"
    steps = count_fine_tune_steps(spec.steps[0] if isinstance(spec, PipelineSpec) else spec, train_images=len(fashion.train))
    exported = yaml.safe_load(config_yaml(spec, module=tiny.module, fine_tune_steps=steps))
    exported_entries = exported["pipeline"] if isinstance(spec, PipelineSpec) else [exported]
    for (step, used), recipe in zip(_steps_entries(spec, result.library_config), exported_entries, strict=True):
        assert recipe == used, f"{step.summary()}: the recipe and the handler disagree"
        if "config_class" in recipe:  # coremltools: the same library object, built by the named class
            assert _config_object_dict(recipe) == _config_object_dict(used)


@pytest.mark.slow
def test_gradual_pruning_schedule_of_the_portable_recipe_is_the_handlers(tiny, fashion):
    """The recipe written before any model is known uses the handler's schedule (it used to be range(1, 76, 4))."""
    spec = PruneSpec(workflow="fine_tune", target_sparsity=0.5, train_limit=320, batch_size=32, epochs=2)
    result = compress(model=tiny, spec=spec, dataset=fashion)  # 2 000 training images ≥ train_limit: 20 steps
    used = load_config(result.library_config).module_name_configs[re.escape("conv4")].scheduler.update_steps
    portable = coremltools_config(spec)
    assert portable["config"]["global_config"]["scheduler"]["update_steps"] == used.tolist() == gradual_update_steps(20)
    assert portable["fine_tune_steps"] == 20


def _portable_config_for_model(spec, model: nn.Module):
    """What the portable recipe's snippet builds on `model`: weight_threshold skips listed first, then the patterns."""
    recipe = coremltools_config(spec)
    config = dict(recipe["config"])
    threshold = recipe.get("weight_threshold", 0)
    small = {re.escape(n): None for n, layer in weight_layers(model).items() if layer.weight.numel() <= threshold}
    config["module_name_configs"] = {**small, **config.get("module_name_configs", {})}
    return load_config({**recipe, "config": config})


@pytest.mark.parametrize(
    "spec",
    [
        PalettizeSpec(n_bits=4, overrides={"conv": {"n_bits": 6}, "conv3": {"n_bits": 2}, "fc1": None}),
        QuantizeWeightsSpec(dtype="int4", overrides={"conv4": {"dtype": "int8"}, "fc1": None}),
        PruneSpec(target_sparsity=0.4, overrides={"conv[34]": {"target_sparsity": 0.7}, "conv4": {"target_sparsity": 0.2}}),
    ],
    ids=lambda s: s.method,
)
def test_portable_recipe_resolves_every_layer_like_the_handler(tiny, fashion, spec):
    """Overrides: the app's last-match-wins re.search equals coremltools' first-match fullmatch on every layer."""
    used = load_config(compress(model=tiny, spec=spec, dataset=fashion).library_config)
    portable = _portable_config_for_model(spec, tiny.module)
    for name, layer in weight_layers(tiny.module).items():
        expected = used.module_name_configs.get(re.escape(name))  # the handler lists exactly the layers it compresses
        assert _plain(_as_dict(portable.get_module_config(name, layer))) == _plain(_as_dict(expected)), name


def _as_dict(config):
    return None if config is None else config.as_dict()


# --------------------------------------------------------------------------- descriptors


def test_every_method_has_one_complete_descriptor():
    assert list(METHODS) == list(SPEC_TYPES)
    colors = [d.color for d in METHODS.values()]
    assert len(set(colors)) == len(colors) and all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colors)
    for name, descriptor in METHODS.items():
        assert descriptor.spec_type is SPEC_TYPES[name] and method_descriptor(name) is descriptor
        assert descriptor.label and descriptor.source and "seed" not in descriptor.source
    with pytest.raises(ValueError, match="registered twice"):
        register_method(METHODS["prune"])
    with pytest.raises(KeyError, match="unknown compression method 'sparsify'"):
        method_descriptor("sparsify")


def test_labels_and_colours_of_methods_baseline_and_pipelines():
    assert method_label("quantize_activations") == "W8A8 activations"
    assert method_color("palettize") == "#4c78a8"
    assert method_label(BASELINE) == "Baseline (fp16)" and method_color(BASELINE) == "#8c8c8c"
    assert method_descriptor(PIPELINE).label == method_label(PIPELINE) == "Joint pipeline"
    assert method_color("prune+palettize") == method_color(PIPELINE)
    assert method_label("prune+palettize") == "prune+palettize"
    assert method_color("something_else") == "#bab0ac"


def test_compressed_by_default_uses_each_methods_own_threshold():
    assert METHODS["palettize"].compressed_by_default(2049) == (True, None)
    compressed, reason = METHODS["palettize"].compressed_by_default(2048)
    assert not compressed and "weight_threshold" in reason and "2,048" in reason
    assert METHODS["quantize_activations"].compressed_by_default(9) == (True, None)  # W8A8: threshold 0
    assert METHODS["prune"].compressed_by_default(600, PruneSpec(weight_threshold=500)) == (True, None)


def test_compressed_by_default_with_the_layer_applies_the_methods_limits():
    conv, linear = nn.Conv2d(16, 32, 3), nn.Linear(64, 64)
    compressed, reason = METHODS["torch_dynamic"].compressed_by_default(conv.weight.numel(), layer=conv)
    assert not compressed and "Linear layers only" in reason
    assert METHODS["torch_dynamic"].compressed_by_default(linear.weight.numel(), layer=linear) == (True, None)
    grouped = PalettizeSpec(granularity="per_grouped_channel", group_size=24)
    compressed, reason = METHODS["palettize"].compressed_by_default(conv.weight.numel(), grouped, layer=conv)
    assert not compressed and "group_size 24" in reason
    overridden = PalettizeSpec(overrides={"head": None})
    assert METHODS["palettize"].compressed_by_default(4608, overridden, layer=conv, name="head")[0] is False
    pipeline = PipelineSpec((PruneSpec(weight_threshold=10_000), PalettizeSpec(weight_threshold=100)))
    assert method_descriptor(PIPELINE).compressed_by_default(4608, pipeline, layer=conv) == (True, None)


@pytest.mark.slow
def test_latency_notes_are_honest_about_rewritten_graphs(tiny, fashion):
    plain = compress(model=tiny, spec=PalettizeSpec(), dataset=fashion)
    note = METHODS["palettize"].latency_note(spec=plain.spec, result=plain, timed_artifact=False)
    assert "by construction" in note
    for spec in (QuantizeWeightsSpec(workflow="fine_tune", **FAST), QuantizeActivationsSpec(workflow="fine_tune", **FAST)):
        result = compress(model=tiny, spec=spec, dataset=fashion)
        note = method_descriptor(spec.method).latency_note(spec=spec, result=result, timed_artifact=False)
        assert "by construction" not in note and "graph" in note
    static = TorchStaticSpec(calibration_samples=32)
    assert "real int8" in METHODS["torch_static"].latency_note(spec=static, result=None, timed_artifact=True)
    assert "fp16" in METHODS["torch_dynamic"].latency_note(spec=TorchDynamicSpec(dtype="fp16"), result=None, timed_artifact=True)
    pipeline = PipelineSpec((PruneSpec(), PalettizeSpec()))
    assert "by construction" in method_descriptor(PIPELINE).latency_note(spec=pipeline, result=plain, timed_artifact=False)


def test_a_model_lifted_to_an_fx_graph_is_not_called_rewritten_by_a_data_free_method(tiny, fashion):
    """A .pt2 / ONNX upload is an FX graph before compression: data-free palettization keeps that graph."""
    lifted = dataclasses.replace(tiny, module=torch.fx.symbolic_trace(tiny.module))
    result = compress(model=lifted, spec=PalettizeSpec(), dataset=fashion)
    assert isinstance(result.module, torch.fx.GraphModule)
    note = METHODS["palettize"].latency_note(spec=result.spec, result=result, timed_artifact=False)
    assert "by construction" in note and "rewritten graph" not in note


def test_descriptor_validates_its_declarations():
    with pytest.raises(ValueError, match="storage"):
        MethodDescriptor(
            name="prune", label="x", color="#000000", source="x", spec_type=PruneSpec, handler=print,
            eligibility=print, library_config=print, snippet=print, storage="zip", latency_note=print,
        )
    assert METHODS["torch_static"].runs_int8_kernels and not METHODS["palettize"].runs_int8_kernels
    assert METHODS["torch_dynamic"].artifact_kind == "torchscript" and METHODS["prune"].artifact_kind == "mlpackage"
    assert {n for n, d in METHODS.items() if d.coreml_side} == {"palettize", "quantize_weights", "prune"}


def test_the_handler_is_found_by_the_spec_type():
    from core.compress.registry import descriptor_for
    from core.specs import CompressionSpec

    for name, descriptor in METHODS.items():
        assert descriptor_for(SPEC_TYPES[name]()) is descriptor
    assert descriptor_for(PipelineSpec((PruneSpec(), PalettizeSpec()))) is method_descriptor(PIPELINE)

    @dataclasses.dataclass(frozen=True)
    class Unregistered(CompressionSpec):  # no method name, no handler
        pass

    with pytest.raises(KeyError, match="no compression handler is registered for Unregistered"):
        descriptor_for(Unregistered())
