"""The granularity lesson's depthwise notes: measured on the loaded model, accuracies quoted from the manifest."""

from __future__ import annotations

import torch

from core.learn.depthwise import MANIFEST_KEY, accuracy_note, lesson_notes
from core.models.architectures import FashionCNN, FashionMobileNet


def _mobilenet() -> torch.nn.Module:
    torch.manual_seed(0)
    net = FashionMobileNet().eval()
    with torch.no_grad():  # BatchNorm statistics as training leaves them: channels of very different variance
        for bn in net.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.running_var.copy_(torch.logspace(-3, 1, bn.num_features)[torch.randperm(bn.num_features)])
    return net


def test_depthwise_layer_note_names_its_spread():
    notes = lesson_notes(module=_mobilenet(), layer="blocks.2.depthwise.0", manifest_entry={})
    assert len(notes) == 1  # nothing measured in this manifest entry: no accuracy line
    assert notes[0].startswith("blocks.2.depthwise.0 is a depthwise conv: one 3×3 kernel per channel, 144 channels.")
    assert "BatchNorm folded in" in notes[0] and "of the 127 positive levels" in notes[0]


def test_other_layer_points_at_the_most_spread_depthwise_conv():
    notes = lesson_notes(module=_mobilenet(), layer="blocks.2.expand.0", manifest_entry={})
    assert notes[0].startswith("This model has 8 depthwise convs; the most spread is blocks.")


def test_model_without_depthwise_convs_points_at_the_sample():
    notes = lesson_notes(module=FashionCNN().eval(), layer="features.0", manifest_entry={})
    assert notes == [notes[0]] and "fashion_mobilenet" in notes[0] and "int8 weight scales" in notes[0]


def test_accuracy_note_quotes_the_manifest():
    entry = {MANIFEST_KEY: {"fp32": 0.9, "W8A8 per-channel weights": 0.899, "W8A8 per-tensor weights": 0.5,
                            "torch_static per-channel": 0.898, "torch_static per-tensor": 0.6}}
    assert accuracy_note({}) is None
    text = accuracy_note(entry)
    assert "fp32 90.00%" in text and "per-tensor scales 50.00%" in text and "60.00% per tensor" in text
    notes = lesson_notes(module=_mobilenet(), layer="blocks.2.depthwise.0", manifest_entry=entry)
    assert notes[1] == text
