"""Specs: every impossible value gets its own clear error; dict / JSON / YAML round-trips are lossless."""

from __future__ import annotations

import pytest

from core.specs import (
    PalettizeSpec,
    PipelineSpec,
    PruneSpec,
    QuantizeWeightsSpec,
    SpecError,
    TorchStaticSpec,
    parse_spec,
    spec_from_dict,
    spec_to_json,
    spec_to_yaml,
)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"method": "palettize", "granularity": "per_grouped_channel", "group_size": 0}, "group_size must be at least 1; got 0"),
        ({"method": "palettize", "n_bits": 5}, "n_bits must be one of 1, 2, 3, 4, 6, 8; got 5"),
        ({"method": "prune", "target_sparsity": 1.5}, r"target_sparsity must be in \[0.0, 1.0\); got 1.5"),
        ({"method": "palettize", "nbits": 4}, "unknown key\\(s\\) for palettize: nbits"),
        ({"steps": [{"method": "palettize"}, {"method": "prune"}]}, "pipeline palettize → prune is not supported: .*prune first"),
        ({"steps": [{"method": "quantize_weights"}, {"method": "palettize"}]}, "quantize_weights → palettize is not supported"),
        ({"method": "compress_harder"}, "unknown method 'compress_harder'"),
        ({"method": "prune", "n_m": [4, 2], "structure": "n_m"}, "0 < n < m"),
        ({"method": "palettize", "workflow": "calibration", "mode": "uniform"}, "data-free only"),
        ({"method": "palettize", "cluster_dim": 2, "enable_per_channel_scale": True}, "cannot be combined with vector"),
        ({"method": "palettize", "mode": "unique", "lut_dtype": "int8"}, "needs mode 'kmeans'"),
        ({"method": "palettize", "mode": "uniform", "cluster_dim": 2}, "scalar LUT"),
        ({"method": "quantize_weights", "workflow": "fine_tune", "granularity": "per_block"}, "per channel only"),
        ({"method": "torch_static", "workflow": "data_free"}, "workflow for torch_static must be one of calibration, fine_tune"),
        ({"method": "palettize", "overrides": {"(": None}}, "not a valid regular expression"),
        ({"method": "palettize", "overrides": {"fc": {"dtype": "int8"}}}, "per-layer keys for palettize"),
        ({"method": "palettize", "overrides": {"fc": {"n_bits": 7}}}, "n_bits must be one of"),
        ({"method": "torch_static", "backend": "tensorrt"}, "backend must be one of x86, fbgemm, qnnpack"),
    ],
)
def test_bad_specs_say_what_is_wrong(data, message):
    with pytest.raises(SpecError, match=message):
        spec_from_dict(data)


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        PalettizeSpec(n_bits=5)


@pytest.mark.parametrize(
    "spec",
    [
        PalettizeSpec(n_bits=2, granularity="per_grouped_channel", group_size=8, overrides={"fc": None, "conv": {"n_bits": 4}}),
        QuantizeWeightsSpec(dtype="int4", granularity="per_block", block_size=64, mode="asymmetric"),
        PruneSpec(structure="n_m", n_m=(2, 4), workflow="fine_tune", max_steps=100),
        TorchStaticSpec(backend="qnnpack", per_channel=False),
        PipelineSpec((PruneSpec(target_sparsity=0.6), PalettizeSpec(n_bits=4))),
    ],
    ids=lambda s: s.summary(),
)
def test_round_trips(spec):
    assert spec_from_dict(spec.to_dict()) == spec
    assert parse_spec(spec_to_json(spec)) == spec
    assert parse_spec(spec_to_yaml(spec)) == spec


def test_override_resolution_last_match_wins():
    spec = PalettizeSpec(n_bits=4, overrides={"conv": {"n_bits": 2}, "conv2": None})
    assert spec.resolve("features.conv1").n_bits == 2
    assert spec.resolve("features.conv2") is None
    assert spec.resolve("fc").n_bits == 4


def test_settings_read_as_a_person_says_them_with_library_names_only_as_hints() -> None:
    from core.specs import PalettizeSpec, PruneSpec, QuantizeActivationsSpec, QuantizeWeightsSpec, TorchStaticSpec

    assert PalettizeSpec(n_bits=4).summary() == "4-bit palettization, data-free"
    vector = PalettizeSpec(n_bits=2, granularity="per_grouped_channel", group_size=16, cluster_dim=2).summary()
    assert vector == "2-bit palettization, groups of 16 channels, vectors of 2 weights (cluster_dim 2), data-free"
    assert PruneSpec(target_sparsity=0.5).summary() == "50 % pruning, data-free"
    assert PruneSpec(structure="n_m").summary() == "50 % pruning, 2 of every 4 weights, data-free"
    assert QuantizeWeightsSpec(dtype="int4", granularity="per_block", block_size=32).summary() == (
        "int4 weight quantization, blocks of 32, symmetric, data-free")
    assert QuantizeActivationsSpec().summary().endswith("calibrated on 128 images")
    assert TorchStaticSpec(workflow="fine_tune", calibration_samples=64).summary() == (
        "PyTorch static int8 (x86 recipe), fine-tuned after calibrating on 64 images")
    every = [PalettizeSpec(), vector, PruneSpec(), QuantizeWeightsSpec(), QuantizeActivationsSpec(), TorchStaticSpec()]
    for text in (s if isinstance(s, str) else s.summary() for s in every):
        assert "data_free" not in text and "(calibration" not in text and "_" not in text.replace("cluster_dim", "")


def test_every_knob_is_declared_once_with_what_a_form_needs():
    """Each field's Knob is what validation, the forms, sweeps and the hand-off read: every value a form offers is
    valid, every declared choice outside them is refused with the field's name, and every knob reads plainly."""
    import dataclasses

    import core.compress  # noqa: F401  (method modules may declare their specs next to their handlers)
    from core.specs import SPEC_TYPES, SpecError

    for spec_cls in SPEC_TYPES.values():
        for name, meta in spec_cls.knobs().items():
            assert meta.label and meta.help, f"{spec_cls.method}.{name} needs a label and help"
            default = spec_cls.default_of(name)
            for value in spec_cls.offered_values(name):
                spec = spec_cls()
                if name != "workflow":  # a method's other workflows may not combine with every default
                    assert getattr(dataclasses.replace(spec, **{name: value}), name) == value
            if spec_cls.allowed_values(name):
                assert default in spec_cls.allowed_values(name)
                with pytest.raises(SpecError, match=rf"^{'workflow for ' + spec_cls.method if name == 'workflow' else name} must be one of"):
                    spec_cls(**{name: "not-a-choice"})
        # per-layer knobs are exactly the override keys
        for name in spec_cls.layer_fields():
            assert spec_cls(overrides={"x": {name: spec_cls.default_of(name)}}).overrides


def test_a_range_is_validated_from_its_knob():
    from core.specs import QuantizeWeightsSpec, SpecError

    meta = PruneSpec.knobs()["target_sparsity"]
    assert (meta.minimum, meta.maximum, meta.high_open) == (0.0, 1.0, True)
    with pytest.raises(SpecError, match=r"target_sparsity must be in \[0.0, 1.0\); got 1.0"):
        PruneSpec(target_sparsity=1.0)
    assert QuantizeWeightsSpec.offered_values("block_size") == (8, 16, 32, 64, 128)
    assert PalettizeSpec.widget_key("n_bits") == "cfg.palettize.n_bits"
