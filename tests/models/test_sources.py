"""Model-source registry and safe loading of every kind of model file, including the bad ones."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from core.models.architectures import FashionCNN, FashionMobileNet, FashionResNet
from core.models.sources import (
    ModelLoadError,
    list_sources,
    load_model,
    read_state_dict,
    sample_manifest,
)


def test_registry_lists_samples_and_seed_architectures():
    ids = [s.source_id for s in list_sources()]
    for expected in ("sample:fashion_cnn", "sample:fashion_resnet", "torchvision:resnet18", "torchvision:resnet50",
                     "torchvision:mobilenet_v2", "torchvision:squeezenet1_1"):
        assert expected in ids


@pytest.mark.parametrize("name,min_acc", [("fashion_cnn", 0.905), ("fashion_resnet", 0.925), ("fashion_mobilenet", 0.90)])
def test_sample_models_load_with_manifest(name, min_acc):
    model = load_model(f"sample:{name}")
    entry = sample_manifest()[name]
    assert model.accuracy_meaningful and model.dataset == "fashion_mnist"
    assert model.params == entry["params"]
    assert entry["top1_test_10k"] >= min_acc
    assert model.size_fp16_bytes * 2 == model.size_fp32_bytes
    out = model.module(model.example_input(2))
    assert out.shape == (2, 10)
    assert not model.module.training


def test_fashion_resnet_is_resnet_sized():
    assert sum(p.numel() for p in FashionResNet().parameters()) >= 2_000_000


def test_fashion_mobilenet_is_mobilenet_v2_shaped():
    net = FashionMobileNet()
    assert 200_000 <= sum(p.numel() for p in net.parameters()) <= 600_000
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    depthwise = [c for c in convs if c.groups > 1 and c.groups == c.in_channels == c.out_channels]
    assert len(depthwise) == 8 and all(c.kernel_size == (3, 3) for c in depthwise)
    assert sum(isinstance(m, torch.nn.ReLU6) for m in net.modules()) == 2 * 8 - 1 + 2  # expand + depthwise, stem, head
    assert sum(block.use_residual for block in net.blocks) == 3
    # linear bottleneck: a block's projection ends in BatchNorm, no activation
    assert all(isinstance(block.project[-1], torch.nn.BatchNorm2d) for block in net.blocks)
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_torchvision_random_weights_say_accuracy_is_not_meaningful():
    model = load_model("torchvision:squeezenet1_1")
    assert not model.accuracy_meaningful and model.dataset is None
    assert "accuracy numbers are not meaningful" in model.weights_note
    assert model.input_shape == (3, 224, 224)


def test_torchvision_with_user_weights_file(tmp_path):
    import torchvision

    net = torchvision.models.squeezenet1_1(num_classes=7)
    path = tmp_path / "sq.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    model = load_model("torchvision:squeezenet1_1", weights=path)
    assert model.num_classes == 7
    assert torch.equal(model.module.state_dict()["classifier.1.weight"], net.state_dict()["classifier.1.weight"])


def test_pretrained_not_in_cache_is_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache; nothing is downloaded
    with pytest.raises(ModelLoadError, match="not in the local torch hub cache"):
        load_model("torchvision:resnet18", pretrained=True)


def test_state_dict_pt_loads_with_weights_only(tmp_path):
    net = FashionCNN()
    path = tmp_path / "cnn.pt"
    torch.save({"state_dict": net.state_dict()}, path)
    model = load_model(f"state_dict:fashion_cnn:{path}")
    assert torch.equal(model.module.state_dict()["classifier.1.weight"], net.state_dict()["classifier.1.weight"])


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/compression_studio_pwned",))


def test_pickle_with_code_is_refused_and_not_executed(tmp_path):
    marker = Path("/tmp/compression_studio_pwned")
    marker.unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(1), "payload": _Exploit()}, path)
    with pytest.raises(ModelLoadError, match="refused for safety"):
        read_state_dict(path)
    raw = tmp_path / "evil.pth"
    raw.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(ModelLoadError):
        read_state_dict(raw)
    assert not marker.exists()


def test_state_dict_for_another_architecture_names_keys(tmp_path):
    path = tmp_path / "resnet.safetensors"
    save_file({k: v.contiguous() for k, v in FashionResNet().state_dict().items()}, str(path))
    with pytest.raises(ModelLoadError, match=r"^resnet\.safetensors does not fit architecture 'fashion_cnn' — 28 key\(s\) "
                       r"missing from the file \(first: features\.0\.weight\); 74 unexpected key\(s\) in the file "
                       r"\(first: layer1\.bn1\.num_batches_tracked\)\. Pick the architecture"):
        load_model(f"state_dict:fashion_cnn:{path}")


def test_wrong_shapes_are_named(tmp_path):
    state = FashionCNN().state_dict()
    state["classifier.4.weight"] = torch.zeros(5, 256)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(ModelLoadError, match=r"^bad\.pt does not fit architecture 'fashion_cnn' — classifier\.4\.weight: "
                       r"file 5×256, fashion_cnn expects 10×256\. "):
        load_model(f"state_dict:fashion_cnn:{path}")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_empty_truncated_and_corrupt_files(tmp_path, suffix):
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        read_state_dict(empty)

    good = tmp_path / f"good{suffix}"
    state = {k: v.contiguous() for k, v in FashionCNN().state_dict().items()}
    if suffix == ".pt":
        torch.save(state, good)
    else:
        save_file(state, str(good))
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match=r"corrupt|truncated|not a valid"):
        read_state_dict(truncated)

    garbage = tmp_path / f"garbage{suffix}"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(ModelLoadError):
        read_state_dict(garbage)


@pytest.mark.slow
def test_torchscript_upload_loads_and_runs(tmp_path):
    net = FashionCNN().eval()
    path = tmp_path / "cnn_ts.pt"
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 28, 28)), str(path))
    model = load_model(f"torchscript:{path}")
    assert model.form == "torchscript" and model.input_shape == (1, 28, 28) and model.num_classes == 10
    assert not model.is_torchscript  # converted and lifted to real layers (tests/models/test_graph_routes.py)
    x = torch.randn(3, 1, 28, 28)
    assert torch.allclose(model.module(x), net(x), atol=1e-5)


@pytest.mark.slow
def test_full_model_pickle_is_not_accepted_as_torchscript(tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save(FashionCNN(), path)  # a pickle of a Python class, not TorchScript
    with pytest.raises(ModelLoadError, match=r"not a loadable TorchScript model|not a TorchScript archive"):
        load_model(f"torchscript:{path}")


def test_unknown_source_lists_known_ones():
    with pytest.raises(ModelLoadError, match=r"unknown model source 'foo:bar'.*torchvision:<arch>, timm:<name>.*"
                       r"sample:fashion_cnn"):
        load_model("foo:bar")
    with pytest.raises(ModelLoadError, match=r"unknown torchvision architecture 'vgg99'\. Did you mean vgg19"):
        load_model("torchvision:vgg99")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_state_dict_with_nan_or_inf_weights_names_the_tensors(tmp_path, suffix):
    state = {k: v.clone().contiguous() for k, v in FashionCNN().state_dict().items()}
    state["classifier.1.weight"][0, :2] = float("nan")
    state["features.0.weight"][0, 0, 0, 0] = float("-inf")
    path = tmp_path / f"diverged{suffix}"
    if suffix == ".pt":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    with pytest.raises(ModelLoadError, match=rf"^diverged\{suffix} has NaN or infinite values in 2 tensor\(s\): ") as info:
        load_model(f"state_dict:fashion_cnn:{path}")
    message = str(info.value)
    assert "features.0.weight (1 inf)" in message and "classifier.1.weight (2 NaN)" in message
    assert message.endswith("The weights are corrupt or training diverged; use weights saved from a healthy checkpoint.")
