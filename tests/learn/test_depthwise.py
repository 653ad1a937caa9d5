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


def test_a_channel_below_half_a_level_is_said_to_round_to_zero():
    net = _mobilenet()
    with torch.no_grad():  # one channel whose BatchNorm variance collapsed: folded, it is ~300× wider than the rest
        bn = net.blocks[2].depthwise[1]
        bn.running_var.fill_(1.0)
        bn.running_var[7] = 0.0
    note = lesson_notes(module=net, layer="blocks.2.depthwise.0", manifest_entry={})[0]
    assert "its weights all round to zero" in note
    assert "widest channel range is 1.0×" not in note


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
    assert text.startswith("Measured on the sample's 10,000 test images: fp32 90.00%;")
    assert "per channel: W8A8 89.90% (-0.10 points), PyTorch static int8 89.80% (-0.20 points)" in text
    assert "one per tensor: W8A8 50.00% (-40.00 points), PyTorch static int8 60.00% (-30.00 points)." in text
    assert "on the sample's 2,000 test images" in accuracy_note({**entry, "eval_images": 2000})
    notes = lesson_notes(module=_mobilenet(), layer="blocks.2.depthwise.0", manifest_entry=entry)
    assert notes[1] == text
