"""Lessons 1 and 2: linear quantization — scale, zero-point, clipping and granularity — computed by the libraries.

At 4 and 8 bits (what the Compress page offers) the codes, scales and zero-points come from coremltools'
``compute_qparams``, the function its PostTrainingQuantizer calls, so they equal what a real run stores. Other
widths (2, 3, 5, 6, 7 bits), which coremltools' linear quantizer does not offer, come from torch.ao's
MinMaxObserver / PerChannelMinMaxObserver and fake-quantize kernels with coremltools' integer range
(symmetric ±(2ⁿ⁻¹ − 1), asymmetric −2ⁿ⁻¹ … 2ⁿ⁻¹ − 1). The two libraries agree on the scales; they round a
handful of exact ties differently (torch multiplies by 1/scale, coremltools divides), which tests/learn pins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

from core.learn.tensors import stored_bits, weight_snr_db
from core.library_internals import compute_qparams as coreml_qparams
from core.library_internals import dequantize_by_scale_and_zp

GRANULARITIES = ("per_tensor", "per_channel", "per_block")


@dataclass(frozen=True)
class LinearSetting:
    """One linear-quantization setting of a lesson."""

    bits: int = 8
    symmetric: bool = True
    granularity: str = "per_tensor"
    block_size: int = 32
    clip_percentile: float = 100.0  # 100: the range is the weights' min/max

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be between 2 and 8, got {self.bits}.")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {self.granularity!r}.")
        if self.block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {self.block_size}.")
        if not 50.0 < self.clip_percentile <= 100.0:
            raise ValueError(f"clip_percentile must be in (50, 100], got {self.clip_percentile}.")

    @property
    def quant_range(self) -> tuple[int, int]:
        """coremltools' signed integer range for this mode (symmetric drops the most negative code)."""
        half = 2 ** (self.bits - 1)
        return (-half + 1 if self.symmetric else -half), half - 1


@dataclass(frozen=True)
class LinearResult:
    """A quantized tensor and everything a lesson shows about it."""

    setting: LinearSetting
    dequantized: np.ndarray  # same shape as the weight: (q − zero_point) × scale
    codes: np.ndarray  # the stored integers, same shape
    scale: np.ndarray  # one per tensor / output channel / block, shape (channels, blocks) or (1, 1)
    zero_point: np.ndarray  # same shape as scale (zeros when symmetric)
    clip_low: np.ndarray  # the range each scale covers, same shape as scale
    clip_high: np.ndarray
    clipped: np.ndarray  # bool, same shape as the weight: outside the range (saturated)
    rounding_mse: float  # mean over all weights of the squared error of the weights inside the range
    clipping_mse: float  # … and of those outside it
    snr_db: float

    @property
    def n_scales(self) -> int:
        return int(self.scale.size)

    @property
    def levels(self) -> int:
        low, high = self.setting.quant_range
        return high - low + 1

    def grid(self, index: int = 0) -> np.ndarray:
        """The representable values of one scale (the first by default): (q − zero_point) × scale for every code q."""
        low, high = self.setting.quant_range
        scale = float(self.scale.ravel()[index])
        zero = float(self.zero_point.ravel()[index])
        return ((np.arange(low, high + 1) - zero) * scale).astype(np.float32)

    def storage_bits(self) -> dict[str, float]:
        """Bits of the stored layer by kind: the integer codes, the scales and (asymmetric) the zero-points, as the
        product's size model counts them."""
        return stored_bits(parts=("quantized_weights", "scales", "zero_points"), shape=self.codes.shape,
                           method="quantize_weights", bits=self.setting.bits, n_scales=self.n_scales,
                           n_zero_points=0 if self.setting.symmetric else self.n_scales)

    def bits_per_weight(self) -> float:
        return sum(self.storage_bits().values()) / self.codes.size

    def channel_snr_db(self, weight: np.ndarray) -> np.ndarray:
        """Weight SNR of every output channel (dB; +inf where a channel is reproduced exactly)."""
        original = weight.reshape(weight.shape[0], -1).astype(np.float64)
        noise = ((original - self.dequantized.reshape(weight.shape[0], -1)) ** 2).sum(axis=1)
        signal = (original**2).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return 10.0 * np.log10(signal / noise)


def _rows(weight: np.ndarray, setting: LinearSetting) -> np.ndarray:
    """The weight as (groups × values): one row per scale — the tensor, an output channel or a block of inputs."""
    if setting.granularity == "per_tensor":
        return weight.reshape(1, -1)
    if setting.granularity == "per_channel":
        return weight.reshape(weight.shape[0], -1)
    return _blocks(weight, setting.block_size)


def _blocks(weight: np.ndarray, block_size: int) -> np.ndarray:
    """Blocks of `block_size` consecutive input channels (all kernel taps) of one output channel, one per row.

    That is coremltools' per_block layout (block_sizes = [1, block_size, 0, …]).
    """
    out_channels, in_channels = weight.shape[:2]
    if in_channels % block_size:
        raise ValueError(
            f"{in_channels} input channels are not divisible by block size {block_size}; pick a block size that divides it."
        )
    rest = weight.reshape(out_channels, in_channels // block_size, block_size, -1)
    return rest.reshape(out_channels * (in_channels // block_size), -1)


def _scale_shape(weight: np.ndarray, setting: LinearSetting) -> tuple[int, int]:
    if setting.granularity == "per_tensor":
        return 1, 1
    if setting.granularity == "per_channel":
        return weight.shape[0], 1
    return weight.shape[0], weight.shape[1] // setting.block_size


def clip_range(rows: np.ndarray, percentile: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the range kept by a symmetric-tail percentile clip (100: min and max)."""
    if percentile >= 100.0:
        return rows.min(axis=1), rows.max(axis=1)
    low, high = np.percentile(rows, [100.0 - percentile, percentile], axis=1)
    return low.astype(np.float32), high.astype(np.float32)


COREML_BITS = (4, 8)  # the widths coremltools' linear quantizer offers (int4 / int8)


def engine_for(bits: int) -> str:
    """Which library computes a setting: coremltools where it can (what Compress runs), torch.ao otherwise."""
    return "coremltools" if bits in COREML_BITS else "torch.ao"


def _coreml_rows(clipped: np.ndarray, setting: LinearSetting) -> tuple[np.ndarray, ...]:
    """codes, scale, zero-point per row from coremltools' compute_qparams (what PostTrainingQuantizer calls)."""
    mode = "LINEAR_SYMMETRIC" if setting.symmetric else "LINEAR"
    block_sizes = [0, 0] if setting.granularity == "per_tensor" else [1, 0]
    result = coreml_qparams(
        weight=clipped, nbits=setting.bits, signed=True, quantization_mode=mode, dtype=np.int8, block_sizes=block_sizes
    )
    if result is None:
        raise ValueError("coremltools could not quantize this tensor with these settings.")
    codes, scale, zero_point = result
    rows = clipped.shape[0]
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float32).reshape(-1, 1), (rows, 1))
    zero = np.zeros((rows, 1)) if zero_point is None else np.broadcast_to(np.asarray(zero_point).reshape(-1, 1), (rows, 1))
    dequantized = dequantize_by_scale_and_zp(codes, scale, None if zero_point is None else zero.astype(codes.dtype))
    return codes.astype(np.int16), scale, zero.astype(np.int32), dequantized.astype(np.float32)


def _torch_rows(clipped: np.ndarray, setting: LinearSetting) -> tuple[np.ndarray, ...]:
    """codes, scale, zero-point per row from torch.ao's observers and fake-quantize kernels (any width ≤ 8)."""
    quant_min, quant_max = setting.quant_range
    values = torch.from_numpy(np.ascontiguousarray(clipped))
    if setting.granularity == "per_tensor":
        observer = MinMaxObserver(
            dtype=torch.qint8, quant_min=quant_min, quant_max=quant_max,
            qscheme=torch.per_tensor_symmetric if setting.symmetric else torch.per_tensor_affine,
        )
        observer(values)
        scale, zero_point = observer.calculate_qparams()
        dequantized = torch.fake_quantize_per_tensor_affine(values, float(scale), int(zero_point), quant_min, quant_max)
    else:  # per channel and per block: one scale per row
        observer = PerChannelMinMaxObserver(
            ch_axis=0, dtype=torch.qint8, quant_min=quant_min, quant_max=quant_max,
            qscheme=torch.per_channel_symmetric if setting.symmetric else torch.per_channel_affine,
        )
        observer(values)
        scale, zero_point = observer.calculate_qparams()
        dequantized = torch.fake_quantize_per_channel_affine(values, scale.float(), zero_point.int(), 0, quant_min, quant_max)
    rows = clipped.shape[0]
    scale_rows = np.broadcast_to(scale.float().numpy().reshape(-1, 1), (rows, 1))
    zero_rows = np.broadcast_to(zero_point.numpy().reshape(-1, 1), (rows, 1)).astype(np.int32)
    dequantized_np = dequantized.numpy()
    codes = np.rint(dequantized_np.astype(np.float64) / scale_rows + zero_rows).astype(np.int16)
    return codes, scale_rows, zero_rows, dequantized_np


def linear_quantize(weight: np.ndarray, setting: LinearSetting) -> LinearResult:
    """Quantize `weight` for this setting with coremltools (4 / 8 bits) or torch.ao (other widths).

    A percentile clip quantizes the clipped weights: the library's min/max then is the clip range, and a
    weight beyond it gets the end code — exactly what saturating quantization of the original does.
    """
    weight = np.asarray(weight, dtype=np.float32)
    rows = _rows(weight, setting)
    low, high = clip_range(rows, setting.clip_percentile)
    clipped = np.clip(rows, low[:, None], high[:, None]).astype(np.float32)
    engine = _coreml_rows if engine_for(setting.bits) == "coremltools" else _torch_rows
    codes, scale, zero_point, dequantized = engine(clipped, setting)
    dequantized = dequantized.reshape(weight.shape)
    outside = ((rows < low[:, None]) | (rows > high[:, None])).reshape(weight.shape)
    error = (weight.astype(np.float64) - dequantized) ** 2
    shape = _scale_shape(weight, setting)
    return LinearResult(
        setting=setting,
        dequantized=dequantized,
        codes=codes.reshape(weight.shape),
        scale=np.ascontiguousarray(scale).reshape(shape),
        zero_point=np.ascontiguousarray(zero_point).reshape(shape),
        clip_low=low.reshape(shape),
        clip_high=high.reshape(shape),
        clipped=outside,
        rounding_mse=float(error[~outside].sum() / error.size),
        clipping_mse=float(error[outside].sum() / error.size),
        snr_db=weight_snr_db(weight, dequantized),
    )


def staircase(result: LinearResult, *, low: float, high: float, points: int = 801) -> tuple[np.ndarray, np.ndarray]:
    """The float → float map of the first scale over [low, high]: (clip(round(x / scale) + zp) − zp) × scale."""
    ramp = np.linspace(low, high, points, dtype=np.float32)
    quant_min, quant_max = result.setting.quant_range
    scale = float(result.scale.ravel()[0])
    zero = int(result.zero_point.ravel()[0])
    out = torch.fake_quantize_per_tensor_affine(torch.from_numpy(ramp), scale, zero, quant_min, quant_max)
    return ramp, out.numpy()


def with_outlier(weight: np.ndarray, *, channel: int, factor: float) -> np.ndarray:
    """A copy of the weight where one output channel is `factor` times larger (what an outlier channel looks like)."""
    if not 0 <= channel < weight.shape[0]:
        raise ValueError(f"channel must be between 0 and {weight.shape[0] - 1}, got {channel}.")
    changed = weight.copy()
    changed[channel] *= np.float32(factor)
    return changed


def block_sizes_for(in_channels: int, *, options: tuple[int, ...] = (4, 8, 16, 32, 64, 128)) -> list[int]:
    """Block sizes that divide the input channels and leave at least two blocks (what coremltools accepts)."""
    return [b for b in options if in_channels % b == 0 and in_channels > b]
