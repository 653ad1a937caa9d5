"""Small real models for engine tests: a tiny residual CNN and a random-init fashion_cnn, wrapped as LoadedModel."""

from __future__ import annotations

import torch
from torch import nn

from core.data import FASHION_MNIST_CLASSES, FASHION_MNIST_MEAN, FASHION_MNIST_STD
from core.models.architectures import FashionCNN
from core.models.sources import LoadedModel


class TinyNet(nn.Module):
    """Conv+BN+ReLU ×2, a residual block (the add static int8 must quantize), and two Linear layers (~18 k weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)  # 72 weights: below the default threshold
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, bias=False)  # 1,152
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 32, 3, padding=1)  # 4,608
        self.conv4 = nn.Conv2d(32, 32, 3, padding=1, bias=False)  # 9,216 (residual branch)
        self.bn4 = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32, 64)  # 2,048
        self.fc2 = nn.Linear(64, 10)  # 640

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        x = torch.relu(self.conv3(x))
        x = torch.relu(self.bn4(self.conv4(x)) + x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc2(torch.relu(self.fc1(x)))


def _randomise_batchnorm(module: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for sub in module.modules():
        if isinstance(sub, nn.BatchNorm2d):
            n = sub.num_features
            sub.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            sub.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            sub.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            sub.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


def loaded(module: nn.Module, *, dataset: str | None = "fashion_mnist", label: str = "tiny") -> LoadedModel:
    return LoadedModel(
        source_id=f"test:{label}",
        label=label,
        module=module.eval(),
        architecture=label,
        input_shape=(1, 28, 28),
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
        num_classes=10,
        dataset=dataset,
        accuracy_meaningful=False,
        weights_note="random initialisation (test model)",
        class_names=FASHION_MNIST_CLASSES,
    )


def tiny_model(*, seed: int = 0, dataset: str | None = "fashion_mnist") -> LoadedModel:
    torch.manual_seed(seed)
    module = TinyNet()
    _randomise_batchnorm(module, seed)
    return loaded(module, dataset=dataset, label="tiny")


def fashion_cnn_model(*, seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    module = FashionCNN()
    _randomise_batchnorm(module, seed)
    return loaded(module, label="fashion_cnn")


def state_snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_unchanged(module: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    current = module.state_dict()
    assert set(current) == set(snapshot), "the input model gained or lost state entries"
    for key, value in snapshot.items():
        assert torch.equal(current[key], value), f"the input model was modified: {key}"
