"""A loaded model and the words for its weights: what every route (sample, torchvision, timm, graph forms) returns.

Below core.models.sources, which picks the route: a route imports this module, never the dispatcher.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from core.models.preprocessing import Preprocessing

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FASHION_MNIST = "fashion_mnist"


@dataclass
class LoadedModel:
    """A model ready for the engine: fp32, CPU, eval mode, plus everything measurement needs to know about it."""

    source_id: str
    label: str
    module: nn.Module
    architecture: str
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    dataset: str | None  # the dataset it is evaluated on; None → synthetic inputs only
    accuracy_meaningful: bool
    weights_note: str
    class_names: tuple[str, ...] | None = None
    is_torchscript: bool = False  # the module is a TorchScript ScriptModule (a graph that could not be lifted)
    manifest: dict = field(default_factory=dict)
    # How the model arrived: "module" (Python nn.Module: sample, torchvision, timm, state_dict), "torchscript",
    # "exported" (a torch.export ExportedProgram) or "onnx". Graph forms are lifted to an nn.Module with real
    # Conv2d / Linear layers where possible (core.models.lifting); the form still decides which methods apply.
    form: str = "module"
    # Resize-shorter-side → centre-crop preprocessing for image folders (torchvision weights metadata, timm's
    # data config); None → images are resized straight to the input size.
    preprocessing: Preprocessing | None = None

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    @property
    def size_fp32_bytes(self) -> int:
        return sum(t.numel() * 4 for t in _float_tensors(self.module))

    @property
    def size_fp16_bytes(self) -> int:
        return sum(t.numel() * 2 for t in _float_tensors(self.module))

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        return torch.randn((batch_size, *self.input_shape), generator=torch.Generator().manual_seed(0))


def _float_tensors(module: nn.Module) -> list[torch.Tensor]:
    return [t for t in module.state_dict().values() if isinstance(t, torch.Tensor) and t.is_floating_point()]


# What a random-weights model's numbers mean: every page, the CLI and the records use these words.
RANDOM_WEIGHTS_MEANING = (
    "accuracy numbers are not meaningful for random weights; size, latency and output SNR / agreement against its "
    "own fp32 output are"
)


def random_weights_note(calibration: str) -> str:
    """The weights note of a randomly initialised model (starts with "random", as core.evaluation checks)."""
    return f"random initialisation ({calibration}) — {RANDOM_WEIGHTS_MEANING}"
