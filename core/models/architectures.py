"""Architectures of the bundled sample models (trained on Fashion-MNIST by scripts/train_sample_models.py)."""

from __future__ import annotations

import inspect

from torch import Tensor, nn


def _conv_bn_relu(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


class FashionCNN(nn.Module):
    """Compact VGG-style CNN: two conv blocks (conv+BN+ReLU ×2, max-pool) and a two-layer classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, 32),
            *_conv_bn_relu(32, 32),
            nn.MaxPool2d(2),
            *_conv_bn_relu(32, 64),
            *_conv_bn_relu(64, 64),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 conv+BN, projection shortcut when the shape changes, residual add, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu2 = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # The skip-connection add: static int8 quantization must quantize it too (the PyTorch ResNet-34 quantization study).
        return self.relu2(out + identity)


class FashionResNet(nn.Module):
    """Small ResNet for 28×28 inputs: stem, four BasicBlock stages (32→64→128→256→256), ~2.4 M parameters."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn_relu(in_channels, 32))
        self.layer1 = BasicBlock(32, 64, stride=2)  # 14×14
        self.layer2 = BasicBlock(64, 128, stride=2)  # 7×7
        self.layer3 = BasicBlock(128, 256, stride=2)  # 4×4
        self.layer4 = BasicBlock(256, 256)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(self.pool(x).flatten(1))


def _conv_bn_relu6(in_ch: int, out_ch: int, *, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1×1 expand (+BN+ReLU6), 3×3 depthwise (+BN+ReLU6), 1×1 linear projection (+BN).

    The residual add is used when the block keeps the shape (stride 1, same channels).
    """

    def __init__(self, in_ch: int, out_ch: int, *, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_ch * expand_ratio
        self.use_residual = stride == 1 and in_ch == out_ch
        self.expand = _conv_bn_relu6(in_ch, hidden, kernel=1) if expand_ratio != 1 else nn.Identity()
        self.depthwise = _conv_bn_relu6(hidden, hidden, kernel=3, stride=stride, groups=hidden)
        # Linear bottleneck: no activation after the projection (MobileNetV2's point about ReLU destroying low-dim information).
        self.project = nn.Sequential(nn.Conv2d(hidden, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.use_residual else out


# (expand ratio t, output channels c, blocks n, first stride s), as in the MobileNetV2 paper's table 2, scaled to 28×28.
MOBILENET_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 2),  # 28×28 → 14×14 (the cheap t=1 block downsamples, so no 6× expansion runs at 28×28)
    (6, 24, 2, 1),
    (6, 32, 2, 2),  # 7×7
    (6, 64, 2, 1),
    (6, 96, 1, 1),
)


class FashionMobileNet(nn.Module):
    """MobileNetV2-style network for 28×28 inputs: depthwise-separable inverted residuals with ReLU6, ~0.22 M parameters.

    It asks the MobileNet quantization question: its depthwise 3×3 convs have one kernel per channel, so (with
    BatchNorm folded in) their weight ranges differ between channels, which one int8 scale per tensor must cover.
    What that costs the trained sample is measured by bench.granularity_lesson and recorded in its manifest.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = _conv_bn_relu6(in_channels, 16, kernel=3)
        blocks: list[nn.Module] = []
        channels = 16
        for expand_ratio, out_ch, repeats, stride in MOBILENET_STAGES:
            for i in range(repeats):
                blocks.append(InvertedResidual(channels, out_ch, stride=stride if i == 0 else 1, expand_ratio=expand_ratio))
                channels = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.head = _conv_bn_relu6(channels, 320, kernel=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(320, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(self.pool(x).flatten(1))


SAMPLE_ARCHITECTURES: dict[str, type[nn.Module]] = {
    "fashion_cnn": FashionCNN,
    "fashion_resnet": FashionResNet,
    "fashion_mobilenet": FashionMobileNet,
}


def sample_description(name: str) -> str:
    """What a sample model is and what it is for, in one paragraph (its class docstring)."""
    doc = inspect.getdoc(SAMPLE_ARCHITECTURES[name]) or ""
    return " ".join(doc.split())
