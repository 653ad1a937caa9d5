"""Lesson 5: activations and calibration — real inputs of a chosen layer over N calibration images.

The layer's input is recorded with a forward pre-hook while the model runs on calibration images (the
Fashion-MNIST training pool, class-balanced, as the Compress page calibrates; synthetic inputs when the model
has no dataset). torch.ao's observers — the ones coremltools' LinearQuantizer wraps for activations
(``MovingAverageMinMaxObserver`` by default, ``MinMaxObserver``) plus ``HistogramObserver`` — see the batches
in order, and their quint8 scale / zero-point is read after every N. The W8A8 error runs the layer on held-out
images with int8 weights (coremltools' per-channel symmetric qparams, as W8A8 on the Compress page) and
inputs fake-quantized with the observer's qparams, against the float layer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver

from core.compress.layers import weight_layers
from core.data import Dataset, synthetic_inputs
from core.learn.quantization import LinearSetting, linear_quantize
from core.measure.quality import snr_db

OBSERVERS = {
    "moving_average": "moving-average min/max (coremltools' default)",
    "min_max": "min/max",
    "histogram": "histogram (minimises the L2 error)",
}
CALIBRATION_BATCH = 8  # images per calibration batch: the moving average and the histogram see the batches in order
HISTOGRAM_SAMPLE = 50_000  # activation values kept per batch for the lesson's histogram (the observers see all)


def calibration_counts(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The N the lesson offers: up to 256 images for small inputs, 32 for 224×224 ones (seconds, not minutes)."""
    pixels = int(np.prod(input_shape))
    return (8, 16, 32, 64, 128, 256) if pixels <= 16_384 else (8, 16, 32)


def make_observer(kind: str, *, symmetric: bool) -> torch.ao.quantization.ObserverBase:
    """A torch.ao observer as coremltools configures activation observers: quint8, per tensor."""
    qscheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    if kind == "moving_average":
        return MovingAverageMinMaxObserver(dtype=torch.quint8, qscheme=qscheme)
    if kind == "min_max":
        return MinMaxObserver(dtype=torch.quint8, qscheme=qscheme)
    if kind == "histogram":
        return HistogramObserver(dtype=torch.quint8, qscheme=qscheme)
    raise ValueError(f"observer must be one of {', '.join(OBSERVERS)}, got {kind!r}.")


@dataclass(frozen=True)
class ObservedRange:
    """What one observer concluded after N images: the range it covers and the quint8 qparams."""

    images: int
    seen_min: float  # the observer's running statistics (a moving average for moving_average)
    seen_max: float
    scale: float
    zero_point: int

    @property
    def low(self) -> float:
        """The smallest value the quint8 grid represents: (0 − zero_point) × scale."""
        return (0 - self.zero_point) * self.scale

    @property
    def high(self) -> float:
        return (255 - self.zero_point) * self.scale


@dataclass(frozen=True)
class ActivationStudy:
    """A layer's input activations over calibration images, and every observer's range after each N."""

    layer: str
    symmetric: bool
    counts: tuple[int, ...]
    ranges: dict[str, tuple[ObservedRange, ...]]  # observer → one per count
    batch_min: np.ndarray  # per calibration batch: the smallest and largest activation
    batch_max: np.ndarray
    sample: np.ndarray  # a seeded sample of the activation values (for the histogram)
    eval_inputs: torch.Tensor  # the layer's input on held-out images
    eval_outputs: torch.Tensor  # the float layer's output on them
    source: str

    def range_at(self, observer: str, images: int) -> ObservedRange:
        for item in self.ranges[observer]:
            if item.images == images:
                return item
        raise ValueError(f"no range after {images} images; choose one of {', '.join(map(str, self.counts))}.")


def calibration_data(*, input_shape: tuple[int, ...], dataset: Dataset | None, images: int, held_out: int = 32,
                     seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor, str]:
    """Calibration batches of CALIBRATION_BATCH images, held-out images for the error, and where they come from.

    Real images: class-balanced from the training pool (Dataset.calibration_split, as Compress calibrates) and
    held-out ones from the evaluation split. Without a dataset: seeded standard-normal inputs, said so.
    """
    if dataset is not None and tuple(dataset.input_shape) == tuple(input_shape):
        split = dataset.calibration_split(size=images, seed=seed)
        batches = [x for x, _ in dataset.batches(split, batch_size=CALIBRATION_BATCH)]
        test = dataset.eval_split(limit=held_out, seed=seed)
        held = dataset.normalize(test.images)
        return batches, held, f"{dataset.name}: {images} class-balanced training images, {len(test)} held-out test images"
    # calibration and held-out inputs come from separate streams, as in the engine: they never overlap
    inputs = synthetic_inputs(input_shape=input_shape, count=images, seed=seed, purpose="calibration")
    held = synthetic_inputs(input_shape=input_shape, count=held_out, seed=seed, purpose="evaluation")
    batches = [inputs[i : i + CALIBRATION_BATCH] for i in range(0, images, CALIBRATION_BATCH)]
    return batches, held, f"synthetic standard-normal inputs ({images} + {held_out}); the model has no dataset"


def capture_inputs(module: nn.Module, *, layer: str, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    """The input tensor of `layer` for each batch (a forward pre-hook; the model is not changed)."""
    layers = weight_layers(module)
    if layer not in layers:
        raise ValueError(f"the model has no weight layer called {layer!r}; pick one from the list.")
    seen: list[torch.Tensor] = []
    handle = layers[layer].register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        with torch.no_grad():
            for batch in batches:
                module(batch)
    finally:
        handle.remove()
    return seen


def study_activations(*, module: nn.Module, layer: str, calibration: list[torch.Tensor], held_out: torch.Tensor,
                      counts: tuple[int, ...], symmetric: bool = False, source: str = "", seed: int = 0) -> ActivationStudy:
    """Run the calibration batches (CALIBRATION_BATCH images each) and record every observer after each count."""
    module = module.eval()
    inputs = capture_inputs(module, layer=layer, batches=calibration)
    observers = {kind: make_observer(kind, symmetric=symmetric) for kind in OBSERVERS}
    ranges: dict[str, list[ObservedRange]] = {kind: [] for kind in OBSERVERS}
    rng = np.random.default_rng(seed)
    samples, lows, highs = [], [], []
    images = 0
    for batch in inputs:
        images += batch.shape[0]
        flat = batch.reshape(-1)
        lows.append(float(flat.min()))
        highs.append(float(flat.max()))
        values = flat.numpy()
        samples.append(values if values.size <= HISTOGRAM_SAMPLE else rng.choice(values, HISTOGRAM_SAMPLE, replace=False))
        for kind, observer in observers.items():
            observer(batch)
            if images in counts:
                scale, zero_point = observer.calculate_qparams()
                ranges[kind].append(ObservedRange(images=images, seen_min=float(observer.min_val),
                                                  seen_max=float(observer.max_val), scale=float(scale),
                                                  zero_point=int(zero_point)))
    missing = [n for n in counts if n > images]
    if missing:
        raise ValueError(f"only {images} calibration images were given; {missing[0]} were asked for.")
    layer_module = weight_layers(module)[layer]
    eval_inputs = capture_inputs(module, layer=layer, batches=[held_out])[0]
    with torch.no_grad():
        eval_outputs = layer_module(eval_inputs)
    return ActivationStudy(layer=layer, symmetric=symmetric, counts=tuple(counts),
                           ranges={k: tuple(v) for k, v in ranges.items()}, batch_min=np.asarray(lows),
                           batch_max=np.asarray(highs), sample=np.concatenate(samples), eval_inputs=eval_inputs,
                           eval_outputs=eval_outputs, source=source)


@dataclass(frozen=True)
class W8A8Error:
    """Output SNR of the layer on held-out images: weights int8, inputs int8, and both (dB; higher is better)."""

    weights_only_db: float
    activations_only_db: float
    both_db: float
    clipped_fraction: float  # held-out input values outside the calibrated range


def fake_quantize_input(values: torch.Tensor, observed: ObservedRange) -> torch.Tensor:
    """quint8 fake quantization with the observer's qparams (what the quantized model computes with)."""
    return torch.fake_quantize_per_tensor_affine(values, observed.scale, observed.zero_point, 0, 255)


def w8a8_error(*, module: nn.Module, study: ActivationStudy, observed: ObservedRange) -> W8A8Error:
    """The layer's output error on held-out images when its weights and / or inputs are 8-bit."""
    layer = weight_layers(module)[study.layer]
    weight = layer.weight.detach().float().numpy()
    int8 = linear_quantize(weight, LinearSetting(bits=8, symmetric=True, granularity="per_channel"))
    quantized_layer = copy.deepcopy(layer).eval()
    with torch.no_grad():
        quantized_layer.weight.copy_(torch.from_numpy(int8.dequantized))
        x_q = fake_quantize_input(study.eval_inputs, observed)
        reference = study.eval_outputs
        weights_only = quantized_layer(study.eval_inputs)
        activations_only = layer(x_q)
        both = quantized_layer(x_q)
    outside = ((study.eval_inputs < observed.low) | (study.eval_inputs > observed.high)).float().mean()
    return W8A8Error(
        weights_only_db=snr_db(reference=reference, candidate=weights_only),
        activations_only_db=snr_db(reference=reference, candidate=activations_only),
        both_db=snr_db(reference=reference, candidate=both),
        clipped_fraction=float(outside),
    )
