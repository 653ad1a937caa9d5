"""Lesson 6: fake quantization and a short fine-tuning run that recovers accuracy lost at low bits.

Fake quantization rounds the weights in the forward pass — (clamp(round(w / s)) × s, with coremltools'
per-channel symmetric scale s = max|w| / (2ⁿ⁻¹ − 1)) — through torch's ``fake_quantize_per_channel_affine``,
whose backward pass is the straight-through estimator: the gradient passes unchanged where w is inside the
grid and is zero where it was clamped. A torch parametrization puts it on every layer the Compress page would
quantize (more than 2,048 weights), and a few dozen Adam steps on training images move the float weights so
that their rounded copies classify better. BatchNorm statistics stay frozen (eval mode), as coremltools'
QAT milestones freeze them for short runs.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from core.compress.layers import weight_layers
from core.data import Dataset
from core.progress import Progress, as_progress

MIN_WEIGHTS = 2048  # the Compress page's default weight_threshold: smaller layers stay float


@dataclass(frozen=True)
class FineTuneSetting:
    bits: int = 2
    steps: int = 40
    learning_rate: float = 1e-3
    batch_size: int = 32
    eval_images: int = 300
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be between 2 and 8, got {self.bits}.")
        if not 1 <= self.steps <= 1000:
            raise ValueError(f"steps must be between 1 and 1000, got {self.steps}.")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}.")
        if self.batch_size < 1 or self.eval_images < 1:
            raise ValueError("batch_size and eval_images must be at least 1.")

    @property
    def quant_max(self) -> int:
        return 2 ** (self.bits - 1) - 1


def channel_scales(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """coremltools' symmetric per-channel scale: max |w| of each output channel ÷ (2ⁿ⁻¹ − 1)."""
    limit = weight.detach().abs().reshape(weight.shape[0], -1).amax(dim=1)
    return torch.where(limit > 0, limit / (2 ** (bits - 1) - 1), torch.ones_like(limit))


def fake_quantize_weight(weight: torch.Tensor, bits: int, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Round to the n-bit symmetric grid in the forward pass; straight-through gradient in the backward pass."""
    q = 2 ** (bits - 1) - 1
    scale = channel_scales(weight, bits) if scale is None else scale
    zeros = torch.zeros(weight.shape[0], dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight, scale.float(), zeros, 0, -q, q)


class FakeQuantize(nn.Module):
    """A parametrization: the layer computes with the fake-quantized copy of its float weight."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return fake_quantize_weight(weight, self.bits)


def straight_through(values: np.ndarray, *, bits: int, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Forward value and gradient d(out)/d(in) of fake quantization on a grid covering ±limit (autograd)."""
    x = torch.tensor(values, dtype=torch.float32, requires_grad=True)
    scale = torch.tensor([limit / (2 ** (bits - 1) - 1)])
    out = fake_quantize_weight(x.reshape(1, -1), bits, scale).reshape(-1)
    out.sum().backward()
    return out.detach().numpy(), x.grad.numpy()


def with_fake_quantization(module: nn.Module, bits: int) -> tuple[nn.Module, list[str]]:
    """A copy of the model whose large layers compute with fake-quantized weights; and which layers those are."""
    working = copy.deepcopy(module).eval()
    names = [name for name, layer in weight_layers(working).items() if layer.weight.numel() > MIN_WEIGHTS]
    layers = weight_layers(working)
    for name in names:
        parametrize.register_parametrization(layers[name], "weight", FakeQuantize(bits))
    return working, names


def accuracy(module: nn.Module, dataset: Dataset, *, images: int, seed: int = 0) -> float:
    """Top-1 accuracy on a seeded, class-balanced sample of the evaluation images."""
    split = dataset.eval_split(limit=images, seed=seed)
    correct = 0
    with torch.no_grad():
        for inputs, labels in dataset.batches(split, batch_size=250):
            correct += int((module(inputs).argmax(dim=1) == labels).sum())
    return correct / len(split)


@dataclass(frozen=True)
class FineTuneRun:
    setting: FineTuneSetting
    losses: np.ndarray  # training loss of the fake-quantized model at each step
    float_losses: np.ndarray  # the float model's loss on the same batches (the floor to aim for)
    float_accuracy: float
    before_accuracy: float  # fake-quantized, before fine-tuning (data-free rounding)
    after_accuracy: float
    layers: tuple[str, ...]
    seconds: float
    model_label: str = ""  # which model was fine-tuned
    eval_set: str = ""  # what the three accuracies were measured on, e.g. "300 Fashion-MNIST test images (…)"

    @property
    def recovered(self) -> float | None:
        """Fraction of the accuracy lost to rounding that fine-tuning won back (None when nothing was lost)."""
        lost = self.float_accuracy - self.before_accuracy
        return None if lost <= 0 else (self.after_accuracy - self.before_accuracy) / lost


def eval_set_description(dataset: Dataset, *, images: int) -> str:
    """The images `accuracy(…, images=…)` measures, in words: count, dataset and where it came from."""
    count = min(images, len(dataset.test))
    sample = "every" if count == len(dataset.test) else "a seeded, class-balanced sample of the"
    return f"{count:,} {dataset.name} test images ({sample} {len(dataset.test):,} of {dataset.source})"


def fine_tune(*, module: nn.Module, dataset: Dataset, setting: FineTuneSetting, model_label: str = "",
              progress: Progress | None = None) -> FineTuneRun:
    """Fake-quantize a copy of the model and train it for `setting.steps` Adam steps; the input is not changed."""
    progress = as_progress(progress)
    started = time.perf_counter()
    reference = module.eval()
    generator = torch.Generator().manual_seed(setting.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(setting.seed)
        working, names = with_fake_quantization(module, setting.bits)
        if not names:
            raise ValueError(f"no layer has more than {MIN_WEIGHTS:,} weights, so nothing would be quantized.")
        progress.update(0.02, "accuracy before fine-tuning")
        float_accuracy = accuracy(reference, dataset, images=setting.eval_images, seed=setting.seed)
        before = accuracy(working, dataset, images=setting.eval_images, seed=setting.seed)
        split = dataset.training_split(limit=setting.steps * setting.batch_size, seed=setting.seed)
        order = torch.randperm(len(split), generator=generator)
        optimizer = torch.optim.Adam([p for p in working.parameters() if p.requires_grad], lr=setting.learning_rate)
        losses, float_losses = [], []
        for step in range(setting.steps):
            start = (step * setting.batch_size) % max(len(split) - setting.batch_size + 1, 1)
            idx = order[start : start + setting.batch_size]
            inputs, labels = dataset.normalize(split.images[idx]), split.labels[idx]
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(working(inputs), labels)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.item()))
            with torch.no_grad():
                float_losses.append(float(nn.functional.cross_entropy(reference(inputs), labels)))
            progress.update(0.05 + 0.85 * (step + 1) / setting.steps, f"step {step + 1}/{setting.steps}, loss {losses[-1]:.3f}")
        progress.update(0.92, "accuracy after fine-tuning")
        after = accuracy(working, dataset, images=setting.eval_images, seed=setting.seed)
    progress.update(1.0, f"{setting.steps} steps")
    return FineTuneRun(setting=setting, losses=np.asarray(losses), float_losses=np.asarray(float_losses),
                       float_accuracy=float_accuracy, before_accuracy=before, after_accuracy=after, layers=tuple(names),
                       seconds=time.perf_counter() - started, model_label=model_label,
                       eval_set=eval_set_description(dataset, images=setting.eval_images))


SAMPLE_FOR_FINE_TUNING = "sample:fashion_cnn"  # lesson 6's model when the loaded one has no labelled images here


def fine_tune_sample(*, setting: FineTuneSetting, progress: Progress | None = None) -> FineTuneRun:
    """`fine_tune` on the sample fashion_cnn and Fashion-MNIST: lesson 6's run when the loaded model has no
    labelled images to train on. Loads both itself, so a worker can run it (job kind learn_step, core.isolated)."""
    from core.data import load_fashion_mnist
    from core.models.sources import load_model

    model = load_model(SAMPLE_FOR_FINE_TUNING)
    return fine_tune(module=model.module, dataset=load_fashion_mnist(), setting=setting, model_label=model.label,
                     progress=progress)


def fine_tune_by_reference(*, model_ref: dict, data_ref: dict, setting: FineTuneSetting,
                           progress: Progress | None = None) -> FineTuneRun:
    """`fine_tune` on the loaded model and its dataset, named by reference (core.jobs.refs) so that it runs in a
    worker (job kind learn_step, core.isolated): lesson 6 fine-tunes the model the page shows, not another one."""
    from core.jobs.refs import DataRef, ModelRef, load_data_ref, load_model_ref

    model = load_model_ref(ref=ModelRef.from_dict(model_ref))
    dataset = load_data_ref(ref=DataRef.from_dict(data_ref), model=model)
    if dataset is None:
        raise ValueError(f"{model.label} has no labelled images here to fine-tune on; choose a dataset on the Model page.")
    return fine_tune(module=model.module, dataset=dataset, setting=setting, model_label=model.label, progress=progress)
