"""torchvision:<arch>: every classification architecture, preprocessing from the weights metadata, user weights
for any architecture, and the refusals (unknown name, checkpoint of another architecture, too large)."""

from __future__ import annotations

import time

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from core.models.errors import ModelLoadError
from core.models.sources import list_sources, load_model
from core.models.torchvision_route import torchvision_arch_info, torchvision_architectures


def test_every_classification_architecture_is_a_source():
    listed = torchvision.models.list_models(module=torchvision.models)
    ids = {s.source_id for s in list_sources()}
    assert len(listed) >= 70
    assert {f"torchvision:{arch}" for arch in listed} <= ids
    assert set(torchvision_architectures()) == set(listed)


@pytest.mark.parametrize("arch,crop,resize,interpolation", [
    ("vit_b_16", 224, 256, "bilinear"),
    ("efficientnet_b3", 300, 320, "bicubic"),
    ("inception_v3", 299, 342, "bilinear"),
    ("resnet18", 224, 256, "bilinear"),
])
def test_preprocessing_comes_from_the_weights_metadata(arch, crop, resize, interpolation):
    info = torchvision_arch_info(arch)
    assert info.input_shape == (3, crop, crop)
    assert (info.preprocessing.crop_size, info.preprocessing.resize_size) == (crop, resize)
    assert info.preprocessing.interpolation == interpolation
    assert info.params == torchvision.models.get_model_weights(arch).DEFAULT.meta["num_params"]


@pytest.mark.slow
def test_random_resnet18_says_what_its_numbers_mean():
    model = load_model("torchvision:resnet18")
    assert model.params == torchvision_arch_info("resnet18").params == 11_689_512
    assert model.preprocessing is not None and model.preprocessing.crop_size == 224
    assert not model.accuracy_meaningful and model.weights_note.startswith("random")
    assert "not meaningful" in model.weights_note and "SNR" in model.weights_note
    assert model.module(model.example_input(2)).shape == (2, 1000)


@pytest.mark.slow
def test_random_init_is_seeded():
    first, second = load_model("torchvision:squeezenet1_1"), load_model("torchvision:squeezenet1_1")
    for (name, a), b in zip(first.module.state_dict().items(), second.module.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.slow
def test_user_weights_for_any_architecture_adapt_the_class_count(tmp_path):
    net = torchvision.models.mobilenet_v3_small(num_classes=5)
    path = tmp_path / "mbv3.pth"
    torch.save(net.state_dict(), path)
    model = load_model("torchvision:mobilenet_v3_small", weights=path)
    assert model.num_classes == 5 and model.form == "module"
    assert torch.equal(model.module.state_dict()["classifier.3.weight"], net.state_dict()["classifier.3.weight"])
    assert model.module(model.example_input(2)).shape == (2, 5)
    assert model.source_id == f"state_dict:mobilenet_v3_small:{path}"
    assert load_model(model.source_id).num_classes == 5  # the state_dict route keeps working


@pytest.mark.slow
def test_a_checkpoint_of_another_architecture_names_the_first_key_and_both_shapes(tmp_path):
    path = tmp_path / "resnet18.safetensors"
    state = torchvision.models.resnet18().state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    missing = set(torchvision.models.resnet50().state_dict()) - set(state)
    with pytest.raises(ModelLoadError) as info:
        load_model("torchvision:resnet50", weights=path)
    message = str(info.value)
    assert "layer1.0.conv1.weight: file 64×64×3×3, resnet50 expects 64×64×1×1" in message
    assert f"; {len(missing)} key(s) missing from the file (first: layer1.0.conv3.weight)" in message
    assert "unexpected" not in message  # every resnet18 key exists in resnet50 (some with other shapes)
    assert "\n" not in message


def test_unknown_architecture_suggests_close_names():
    with pytest.raises(ModelLoadError, match=r"unknown torchvision architecture 'resnet19'\. Did you mean .*resnet18"):
        load_model("torchvision:resnet19")


def test_too_large_is_refused_before_anything_is_built(monkeypatch):
    monkeypatch.setenv("COMPRESSION_STUDIO_MEMORY_LIMIT", "1GB")
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as info:
        load_model("torchvision:regnet_y_128gf")  # 645 M parameters: building it alone would take 2.6 GB and minutes
    assert time.perf_counter() - started < 5
    message = str(info.value)
    assert message.startswith("torchvision:regnet_y_128gf is too large for this machine")
    assert "644.8 M parameters" in message and "COMPRESSION_STUDIO_MEMORY_LIMIT=1GB" in message
    monkeypatch.setenv("COMPRESSION_STUDIO_MEMORY_LIMIT", "20MB")
    with pytest.raises(ModelLoadError, match=r"torchvision:resnet18 is too large .* \(46\.76 MB of fp32 weights for 11\.7 M parameters, × 4"):
        load_model("torchvision:resnet18")


@pytest.mark.slow
def test_googlenet_weights_saved_without_auxiliary_heads_load(tmp_path):
    """torchvision drops GoogLeNet's aux classifiers after loading pretrained weights; such a state_dict loads."""
    net = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False, num_classes=4)
    path = tmp_path / "googlenet.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    model = load_model("torchvision:googlenet", weights=path)
    assert model.num_classes == 4 and model.module.aux1 is None
    assert model.module(model.example_input(2)).shape == (2, 4)


@pytest.mark.slow
def test_auxiliary_classifiers_are_dropped_so_size_and_artifact_agree(tmp_path):
    """GoogLeNet built with its aux classifiers (random weights, or a checkpoint that holds them): they are dropped as
    torchvision drops them, so they are neither compressed nor counted, and the exported weights match."""
    from core.compress import compress
    from core.export import export_coreml
    from core.measure.artifact_weights import check_artifact_weights
    from core.specs import QuantizeWeightsSpec

    net = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False, num_classes=4)
    path = tmp_path / "googlenet_with_aux.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    model = load_model("torchvision:googlenet", weights=path)
    assert model.module.aux1 is None and model.module.aux2 is None
    assert "auxiliary training classifiers dropped" in model.weights_note
    result = compress(model=model, spec=QuantizeWeightsSpec(), dataset=None)
    assert not [r.name for r in result.layers if r.name.startswith("aux")]
    package = export_coreml(module=result.module, input_shape=model.input_shape, path=tmp_path / "g.mlpackage")
    assert check_artifact_weights(module=result.module, artifact_path=package, artifact_kind="mlpackage").match
