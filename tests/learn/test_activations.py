"""Lesson 5: the observers' ranges equal what coremltools' LinearQuantizer records for the same layer and images."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from coremltools.optimize.torch.quantization import LinearQuantizer
from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver

from core.compress.library_config import load_config
from core.compress.quantize_activations import library_config
from core.data import load_fashion_mnist
from core.learn.activations import (
    CALIBRATION_BATCH,
    calibration_counts,
    calibration_data,
    capture_inputs,
    fake_quantize_input,
    study_activations,
    w8a8_error,
)
from core.learn.quantization import LinearSetting, linear_quantize
from core.specs import QuantizeActivationsSpec
from tests.learn.conftest import CONV

COUNTS = (8, 16, 32)


@pytest.fixture(scope="module")
def calibration(sample):
    return calibration_data(input_shape=sample.input_shape, dataset=load_fashion_mnist(), images=max(COUNTS), held_out=16)


@pytest.fixture(scope="module")
def study(sample, calibration):
    batches, held_out, source = calibration
    return study_activations(module=sample.module, layer=CONV, calibration=batches, held_out=held_out, counts=COUNTS,
                             source=source)


@pytest.mark.slow
def test_moving_average_range_equals_coremltools_linear_quantizer(sample, calibration, study):
    """The W8A8 setting of the Compress page, calibrated on the same batches, observes the same input range."""
    batches, _, _ = calibration
    spec = QuantizeActivationsSpec(mode="asymmetric", calibration_samples=max(COUNTS))
    quantizer = LinearQuantizer(copy.deepcopy(sample.module), load_config(library_config(spec)))
    prepared = quantizer.prepare(example_inputs=(sample.example_input(),), inplace=True)
    quantizer.step()
    with torch.no_grad():
        for batch in batches:
            prepared(batch)
    node = next(n for n in prepared.graph.nodes if n.op == "call_module" and n.target == CONV)
    fake_quantize = getattr(prepared, node.args[0].target)
    scale, zero_point = fake_quantize.calculate_qparams()
    ours = study.range_at("moving_average", max(COUNTS))
    assert ours.scale == pytest.approx(float(scale), rel=1e-6)
    assert ours.zero_point == int(zero_point)
    assert ours.seen_max == pytest.approx(float(fake_quantize.activation_post_process.max_val), rel=1e-6)


@pytest.mark.slow
def test_min_max_and_histogram_equal_torch_observers_after_n_images(sample, calibration, study):
    batches, _, _ = calibration
    inputs = capture_inputs(sample.module, layer=CONV, batches=batches)
    assert all(x.shape[0] == CALIBRATION_BATCH for x in inputs)
    for observer, kind in ((MinMaxObserver(dtype=torch.quint8), "min_max"), (HistogramObserver(dtype=torch.quint8), "histogram")):
        for count, x in zip(range(CALIBRATION_BATCH, 10_000, CALIBRATION_BATCH), inputs, strict=False):
            observer(x)
            if count in COUNTS:
                scale, zero_point = observer.calculate_qparams()
                assert study.range_at(kind, count).scale == pytest.approx(float(scale), rel=1e-6), (kind, count)
                assert study.range_at(kind, count).zero_point == int(zero_point)
    minmax = study.range_at("min_max", 32)
    everything = torch.cat(inputs)
    assert minmax.seen_min == float(everything.min()) and minmax.seen_max == float(everything.max())
    # min/max never shrinks as N grows
    highs = [study.range_at("min_max", n).seen_max for n in COUNTS]
    assert highs == sorted(highs)


def test_w8a8_error_uses_coremltools_int8_weights_and_the_observer_grid(sample, study):
    observed = study.range_at("min_max", 32)
    error = w8a8_error(module=sample.module, study=study, observed=observed)
    layer = dict(sample.module.named_modules())[CONV]
    int8 = linear_quantize(layer.weight.detach().numpy(), LinearSetting(bits=8, granularity="per_channel"))
    quantized = copy.deepcopy(layer)
    with torch.no_grad():
        quantized.weight.copy_(torch.from_numpy(int8.dequantized))
        x_q = fake_quantize_input(study.eval_inputs, observed)
        both = quantized(x_q)
    noise = ((study.eval_outputs - both) ** 2).sum()
    expected = 10 * np.log10(float((study.eval_outputs**2).sum() / noise))
    assert error.both_db == pytest.approx(expected, abs=0.01)
    assert 20 < error.both_db <= min(error.weights_only_db, error.activations_only_db) + 0.5
    grid = torch.unique(x_q)  # every quantized input lies on the quint8 grid of the observer
    codes = grid / observed.scale + observed.zero_point
    assert torch.allclose(codes, codes.round(), atol=1e-3) and codes.min() >= 0 and codes.max() <= 255


def test_counts_and_missing_images(sample, calibration, study):
    assert calibration_counts((1, 28, 28))[-1] == 256 and calibration_counts((3, 224, 224))[-1] == 32
    with pytest.raises(ValueError, match="no range after 12 images"):
        study.range_at("min_max", 12)
    batches, held_out, _ = calibration
    with pytest.raises(ValueError, match="only 32 calibration images"):
        study_activations(module=sample.module, layer=CONV, calibration=batches, held_out=held_out, counts=(64,))
