"""timm:<name>: random init (never a download), a user checkpoint, timm's data config, the refusals, and the
reference a worker reloads."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from core.jobs.refs import ModelRef, load_model_ref
from core.models.errors import ModelLoadError
from core.models.sources import load_model
from core.models.timm_route import timm_model_names, timm_params


@pytest.mark.slow
def test_random_timm_model_takes_timms_data_config():
    model = load_model("timm:resnet10t")
    config = timm.data.resolve_model_data_config(model.module)
    assert model.input_shape == tuple(config["input_size"]) == (3, 176, 176)
    assert model.mean == tuple(config["mean"]) and model.std == tuple(config["std"])
    assert model.preprocessing.interpolation == config["interpolation"] == "bicubic"
    assert model.preprocessing.resize_size == int(176 / config["crop_pct"])  # 201: crop_pct 0.875
    assert model.num_classes == 1000 and model.params == timm_params("resnet10t")
    assert model.weights_note.startswith("random") and not model.accuracy_meaningful
    assert model.module(model.example_input(2)).shape == (2, 1000)


@pytest.mark.slow
def test_checkpoint_sets_the_class_count_and_loads_exactly(tmp_path):
    net = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    path = tmp_path / "r10t.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    model = load_model("timm:resnet10t", weights=path)
    assert model.num_classes == 3 and model.source_id == f"timm:resnet10t:{path}"
    assert torch.equal(model.module.state_dict()["fc.weight"], net.state_dict()["fc.weight"])
    assert load_model(model.source_id).num_classes == 3  # the saved source id reloads the same model


def test_checkpoint_of_another_timm_model_names_the_key_and_shapes(tmp_path):
    path = tmp_path / "small.pth"
    torch.save(timm.create_model("mobilenetv3_small_050", pretrained=False).state_dict(), path)
    with pytest.raises(ModelLoadError) as info:
        load_model("timm:mobilenetv3_small_100", weights=path)
    message = str(info.value)
    assert message.startswith("small.pth does not fit architecture 'mobilenetv3_small_100' — blocks.0.0.conv_pw.weight: "
                              "file 8×16×1×1, mobilenetv3_small_100 expects 16×16×1×1 (")
    assert "missing" not in message and "unexpected" not in message  # same keys, other widths


def test_unknown_timm_name_suggests_close_ones():
    assert len(timm_model_names()) > 1000
    with pytest.raises(ModelLoadError, match=r"unknown timm model 'resnet10x'\. Did you mean .*resnet10t"):
        load_model("timm:resnet10x")


def test_too_large_timm_model_is_refused_from_the_meta_device(monkeypatch):
    monkeypatch.setenv("COMPRESSION_STUDIO_MEMORY_LIMIT", "2MB")
    with pytest.raises(ModelLoadError, match=r"^timm:resnet10t is too large for this machine: about 86\.97 MB needed \(21\.74 MB of fp32 weights for 5\.4 M parameters"):
        load_model("timm:resnet10t")


@pytest.mark.slow
def test_timm_model_ref_round_trips_and_reloads(tmp_path):
    ref = ModelRef.from_source_id("timm:mobilenetv3_small_050")
    assert ref == ModelRef.from_dict(ref.to_dict()) and ref.source_id == "timm:mobilenetv3_small_050"
    assert load_model_ref(ref=ref).architecture == "mobilenetv3_small_050"
    path = tmp_path / "ck.safetensors"
    save_file({k: v.contiguous() for k, v in
               timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=4).state_dict().items()},
              str(path))
    with_file = ModelRef.from_source_id("timm:mobilenetv3_small_050", weights=path)
    assert with_file.kind == "timm" and with_file.path == str(path)
    assert ModelRef.from_source_id(with_file.source_id) == with_file == ModelRef.from_dict(with_file.to_dict())
    assert load_model_ref(ref=with_file).num_classes == 4


def test_state_dict_route_takes_timm_names_too(tmp_path):
    path = tmp_path / "r10t.pth"
    torch.save(timm.create_model("resnet10t", pretrained=False, num_classes=2).state_dict(), path)
    model = load_model(f"state_dict:resnet10t:{path}")
    assert model.num_classes == 2 and model.source_id == f"timm:resnet10t:{path}"
