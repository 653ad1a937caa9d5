"""TorchScript uploads are loaded and probed in a child process with time and memory limits (real hostile files)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch import nn

from core.models.architectures import FashionCNN
from core.models.sources import ModelLoadError, load_model, load_torchscript
from core.models.torchscript_probe import (
    ALLOW_ENV,
    ProbeLimits,
    probe_torchscript,
    torchscript_uploads_allowed,
)


class _LoopsOnLoad(nn.Module):
    """__setstate__ runs inside torch.jit.load: this one never returns."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)

    @torch.jit.export
    def __getstate__(self) -> list[int]:
        return [1]

    @torch.jit.export
    def __setstate__(self, state: list[int]) -> None:
        i = 0
        while i >= 0:
            i = (i + 1) % 1000

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _Allocates20GB(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.big = torch.zeros(1)

    @torch.jit.export
    def __getstate__(self) -> list[int]:
        return [1]

    @torch.jit.export
    def __setstate__(self, state: list[int]) -> None:
        self.big = torch.zeros(5_000_000_000)  # 20 GB of float32; the child's address-space cap refuses it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _ReturnsImages(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


class _ReturnsTuple(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(28 * 28, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.fc(x.flatten(1))
        return y, y


def _save(module: nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(module), str(path))
    return path


@pytest.mark.slow
def test_file_that_loops_forever_on_load_is_stopped(tmp_path):
    path = _save(_LoopsOnLoad(), tmp_path / "loop.pt")
    started = time.perf_counter()
    with pytest.raises(ModelLoadError, match=r"loop\.pt did not finish loading within 5 s and was stopped.*only files you trust"):
        load_torchscript(path, limits=ProbeLimits(timeout_s=5))
    assert time.perf_counter() - started < 30


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="the memory cap needs Linux (RLIMIT_AS + /proc)")
def test_file_that_allocates_20_gb_on_load_is_stopped(tmp_path):
    path = _save(_Allocates20GB(), tmp_path / "hog.pt")
    with pytest.raises(ModelLoadError, match=r"hog\.pt tried to use more than 4\.00 GB of memory while loading and was stopped"):
        load_torchscript(path)  # default limits


@pytest.mark.slow
def test_good_file_is_probed_in_the_child_then_loaded(tmp_path):
    net = FashionCNN().eval()
    path = tmp_path / "cnn.pt"
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 28, 28)), str(path))
    probe = probe_torchscript(path)
    assert (probe.input_shape, probe.num_classes) == ((1, 28, 28), 10)
    model = load_model(f"torchscript:{path}")
    assert model.input_shape == (1, 28, 28) and model.num_classes == 10 and model.dataset == "fashion_mnist"


@pytest.mark.parametrize(
    "module,expected",
    [
        (_ReturnsImages(), r"does not return class scores: given 2 images of 1×28×28 it returned a torch\.float32 tensor shaped 2×1×28×28 \(other input sizes: likewise\)\. .*export the model with its classification head"),
        (_ReturnsTuple(), r"does not return class scores: given 2 images of 1×28×28 it returned a tuple of 2 values\. "),
    ],
)
@pytest.mark.slow
def test_model_whose_output_is_not_class_scores_is_refused_at_probe_time(tmp_path, module, expected):
    path = _save(module, tmp_path / "odd.pt")
    with pytest.raises(ModelLoadError, match=expected):
        load_torchscript(path)


@pytest.mark.slow
def test_torchscript_with_nan_weights_names_the_tensors(tmp_path):
    net = FashionCNN().eval()
    with torch.no_grad():
        net.classifier[4].weight[0, :3] = float("nan")
        net.features[1].running_var[0] = float("inf")
    path = _save(net, tmp_path / "nan.pt")
    with pytest.raises(ModelLoadError, match=r"nan\.pt has NaN or infinite values in 2 tensor\(s\): features\.1\.running_var \(1 inf\), classifier\.4\.weight \(3 NaN\)"):
        load_torchscript(path)


def test_setting_turns_torchscript_off_and_defaults_by_address(tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    assert torchscript_uploads_allowed(None)  # library / CLI use
    for local in ("localhost", "127.0.0.1", "::1", "[::1]"):
        assert torchscript_uploads_allowed(local), local
    for remote in ("0.0.0.0", "", "::", "192.168.1.20", "studio.example.com"):
        assert not torchscript_uploads_allowed(remote), remote
    monkeypatch.setenv(ALLOW_ENV, "1")
    assert torchscript_uploads_allowed("0.0.0.0")
    monkeypatch.setenv(ALLOW_ENV, "off")
    assert not torchscript_uploads_allowed("localhost") and not torchscript_uploads_allowed(None)
    monkeypatch.setenv(ALLOW_ENV, "maybe")  # not understood: the safe side
    assert not torchscript_uploads_allowed(None)

    monkeypatch.setenv(ALLOW_ENV, "0")
    path = tmp_path / "cnn.pt"
    torch.jit.save(torch.jit.trace(FashionCNN().eval(), torch.zeros(1, 1, 28, 28)), str(path))
    with pytest.raises(ModelLoadError, match=rf"TorchScript uploads are turned off \({ALLOW_ENV}=0\).*state_dict"):
        load_model(f"torchscript:{path}")
    monkeypatch.delenv(ALLOW_ENV)
    with pytest.raises(ModelLoadError, match=r"turned off \(the dashboard is reachable from other machines\)"):
        load_torchscript(path, server_address="0.0.0.0")


def test_probe_limits_are_validated():
    with pytest.raises(ValueError, match=r"ProbeLimits\.timeout_s must be positive"):
        ProbeLimits(timeout_s=0)
