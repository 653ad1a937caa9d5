"""SparseGPT pruning, added as one module (core/compress/sparsegpt.py): real layer-wise compression of the trained
sample model, its per-layer report, its spec, and that the Compress page, sweeps, the recipe export and the Learn
hand-off offer it without knowing its name."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from streamlit.testing.v1 import AppTest

from core.compress import METHODS, compress
from core.compress.layers import sparsity
from core.compress.library_config import load_config
from core.compress.sparsegpt import SparseGPTSpec
from core.config_export import config_yaml, coremltools_config, python_snippet
from core.explore.sweeps import CUSTOM_METHODS, CustomGrid
from core.learn import handoff
from core.models.sources import load_model
from core.specs import SpecError, parse_spec, spec_from_dict, spec_to_yaml

SAMPLE = "sample:fashion_cnn"
APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture(scope="module")
def trained():
    return load_model(SAMPLE)


def _accuracy(module: torch.nn.Module, dataset, limit: int = 500) -> float:
    split = dataset.test.subset(torch.arange(min(limit, len(dataset.test))))
    correct = total = 0
    with torch.no_grad():
        for images, labels in dataset.batches(split, batch_size=250):
            correct += int((module(images).argmax(1) == labels).sum())
            total += len(labels)
    return correct / total


def test_each_layer_reaches_its_sparsity_and_keeps_more_accuracy_than_magnitude_pruning(trained, fashion):
    spec = SparseGPTSpec(target_sparsity=0.75, calibration_samples=128, overrides={r"^classifier\.4$": None})
    before = copy.deepcopy(trained.module.state_dict())
    result = compress(model=trained, spec=spec, dataset=fashion)
    assert all(torch.equal(before[k], v) for k, v in trained.module.state_dict().items())  # the input is untouched
    layers = {layer.name: layer for layer in result.layers}
    assert set(layers) == {"features.0", "features.3", "features.7", "features.10", "classifier.1", "classifier.4"}
    pruned = [layer for layer in layers.values() if layer.compressed]
    assert {layer.name for layer in pruned} == {"features.3", "features.7", "features.10", "classifier.1"}
    for layer in pruned:  # measured on the compressed module's weights, per layer
        weight = result.module.get_submodule(layer.name).weight.detach()
        assert sparsity(weight) == pytest.approx(0.75, abs=0.01), layer.name
        assert layer.method == "sparsegpt" and layer.granularity == "unstructured" and layer.extra["mask_bits"] == 1
    # every layer left alone says why
    assert layers["features.0"].reason.startswith("below weight_threshold (")
    assert layers["classifier.4"].reason == r"overridden: left uncompressed by override '^classifier\.4$'"
    assert "training pool (128 class-balanced images" in result.calibration_source

    magnitude = compress(model=trained, spec=spec_from_dict({"method": "prune", "target_sparsity": 0.75,
                                                            "overrides": {r"^classifier\.4$": None}}), dataset=fashion)
    baseline, sparse_gpt, magnitude_acc = (_accuracy(m, fashion) for m in (trained.module, result.module, magnitude.module))
    assert baseline > 0.85
    # SparseGPT re-fits the surviving weights: at 75 % it stays near the baseline, magnitude pruning falls further
    assert sparse_gpt > magnitude_acc and sparse_gpt > baseline - 0.08, (baseline, sparse_gpt, magnitude_acc)


def test_n_m_pattern_and_the_layers_it_cannot_take(tiny, fashion):
    result = compress(model=tiny, spec=SparseGPTSpec(structure="n_m", n_m=(2, 4), calibration_samples=32,
                                                     weight_threshold=1000), dataset=fashion)
    weight = result.module.fc1.weight.detach()  # 32 inputs: groups of 4 along the input axis
    assert ((weight.reshape(64, 8, 4) == 0).sum(-1) >= 2).all()
    odd = compress(model=tiny, spec=SparseGPTSpec(structure="n_m", n_m=(1, 3), processing_group_size=96,
                                                  calibration_samples=32, weight_threshold=1000), dataset=fashion)
    reasons = {layer.name: layer.reason for layer in odd.layers}
    assert reasons["fc1"] == "weight columns (32) not divisible by m=3 for n:m sparsity"


def test_spec_round_trips_and_rejects_what_it_cannot_do():
    spec = SparseGPTSpec(target_sparsity=0.6, hessian_dampening=0.03, overrides={"fc": {"target_sparsity": 0.3}})
    assert spec_from_dict(spec.to_dict()) == spec
    assert parse_spec(spec_to_yaml(spec)) == spec
    assert spec.summary() == "60 % SparseGPT pruning, calibrated on 128 images"
    for data, message in [
        ({"method": "sparsegpt", "sparsity": 0.5}, r"unknown key\(s\) for sparsegpt: sparsity"),
        ({"method": "sparsegpt", "target_sparsity": 1.5}, r"target_sparsity must be in \[0.0, 1.0\); got 1.5"),
        ({"method": "sparsegpt", "workflow": "data_free"}, "workflow for sparsegpt must be one of calibration"),
        ({"method": "sparsegpt", "structure": "block"}, "structure must be one of unstructured, n_m"),
        ({"method": "sparsegpt", "structure": "n_m", "n_m": [1, 3]}, r"processing_group_size \(128\) must be a multiple"),
        ({"method": "sparsegpt", "overrides": {"fc": {"seed": 1}}}, "per-layer keys for sparsegpt"),
    ]:
        with pytest.raises(SpecError, match=message):
            spec_from_dict(data)


def test_recipe_export_is_the_config_the_handler_used_and_its_snippet_reproduces_it(tiny, fashion):
    spec = SparseGPTSpec(calibration_samples=64, weight_threshold=1000)
    result = compress(model=tiny, spec=spec, dataset=fashion)
    exported = yaml.safe_load(config_yaml(spec, module=tiny.module))
    assert exported == result.library_config
    assert exported["api"] == "coremltools.optimize.torch.layerwise_compression.LayerwiseCompressor"
    config = load_config(exported)  # the library's own from_dict accepts it
    assert config.module_name_configs["conv1"] is None and config.module_name_configs["conv2"].target_sparsity == 0.5
    assert "LayerwiseCompressor" in python_snippet(spec=spec, source_id=SAMPLE)

    # The method's snippet, run on a fresh copy with the same calibration batches, gives the handler's weights.
    portable = coremltools_config(spec)
    namespace = {"model": copy.deepcopy(tiny.module).eval(), "torch": torch, "re": __import__("re"),
                 "batches": list(fashion.batches(fashion.calibration_split(size=64, seed=0), batch_size=32))}
    exec(METHODS["sparsegpt"].snippet(spec, portable, "config_1"), namespace)  # our own generated code, as a user runs it
    for name in ("conv2", "conv3", "conv4", "fc1"):
        assert torch.allclose(namespace["model"].get_submodule(name).weight, result.module.get_submodule(name).weight,
                              atol=1e-5), name


def test_sweeps_and_the_learn_handoff_offer_it():
    assert "sparsegpt" in CUSTOM_METHODS
    grid = CustomGrid(methods=("prune", "sparsegpt")).grid()
    assert [c["target_sparsity"] for c in grid.configs if c["method"] == "sparsegpt"] == [0.5, 0.75]
    chosen = CustomGrid(methods=("sparsegpt",), axes={"sparsegpt": {"target_sparsity": (0.6,), "structure": ("unstructured",)}})
    assert [(c["method"], c["target_sparsity"]) for c in chosen.grid().configs] == [("sparsegpt", 0.6)]
    values = handoff.from_spec(SparseGPTSpec(target_sparsity=0.7, calibration_samples=256)).session_values()
    assert values["learn.compress_tab"] == "SparseGPT"
    assert values["cfg.sparsegpt.target_sparsity"] == 0.7 and values["cfg.sparsegpt.calibration_samples"] == 256
    assert values["cfg.sparsegpt.n"] == 2 and values["cfg.sparsegpt.m"] == 4


def test_the_compress_page_draws_its_tab_from_the_spec(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path))
    monkeypatch.setenv("COMPRESSION_STUDIO_DEFAULT_MODEL", SAMPLE)
    monkeypatch.setenv("COMPRESSION_STUDIO_OFFLINE", "1")
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    # Opened from a Learn lesson: the hand-off's values are what the page starts with.
    for key, value in handoff.from_spec(SparseGPTSpec(target_sparsity=0.7)).session_values().items():
        at.session_state[key] = value
    at.switch_page("pages/2_Compress.py").run()
    assert not at.exception
    assert [t.label for t in at.tabs][-2:] == ["SparseGPT", "Joint pipeline"]
    slider = at.slider(key="cfg.sparsegpt.target_sparsity")
    assert slider.value == pytest.approx(0.7) and slider.label == "Target sparsity"
    assert at.number_input(key="cfg.sparsegpt.n").disabled  # n:m only with the n:m pattern
    assert any("method: sparsegpt" in c.value and "target_sparsity: 0.7" in c.value for c in at.code)
    assert "run.sparsegpt" in [b.key for b in at.button]
    at.radio(key="cfg.sparsegpt.structure").set_value("n_m").run()
    at.select_slider(key="cfg.sparsegpt.processing_group_size").set_value(32).run()
    at.number_input(key="cfg.sparsegpt.m").set_value(3).run()
    assert any("processing_group_size (32) must be a multiple of m (3)" in e.value for e in at.error)
    assert "run.sparsegpt" not in [b.key for b in at.button]
