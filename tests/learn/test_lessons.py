"""Lesson texts stay short, and every lesson hands the Compress page a valid spec with its notes."""

from __future__ import annotations

import pytest

from core.learn import handoff
from core.learn.lessons import LESSONS, MAX_WORDS, lesson
from core.learn.palettization import PaletteSetting
from core.learn.pruning import PruneSetting
from core.learn.quantization import LinearSetting
from core.specs import PruneSpec


def test_lessons_are_short_and_distinct():
    assert [item.key for item in LESSONS] == ["scale", "granularity", "palettize", "prune", "activations", "finetune", "bytes"]
    for item in LESSONS:
        assert 60 <= item.words <= MAX_WORDS, (item.key, item.words)
        assert item.try_this and item.title
    with pytest.raises(ValueError, match="unknown lesson"):
        lesson("nope")


def test_linear_handoff_names_what_compress_does_differently():
    made = handoff.from_linear(LinearSetting(bits=3, symmetric=False, clip_percentile=99.9))
    assert made.tab == "Quantize weights"
    assert made.fields == {"dtype": "int4", "mode": "asymmetric", "granularity": "per_channel", "block_size": 32,
                           "workflow": "data_free"}
    assert len(made.notes) == 3  # 3 bits → int4, per tensor → per channel, no percentile clip
    exact = handoff.from_linear(LinearSetting(bits=8, granularity="per_block", block_size=64))
    assert exact.notes == () and exact.fields["granularity"] == "per_block" and exact.fields["block_size"] == 64


def test_palette_and_prune_handoffs_are_exact():
    made = handoff.from_palette(PaletteSetting(n_bits=2, granularity="per_grouped_channel", group_size=8,
                                               per_channel_scale=True))
    assert made.fields == {"n_bits": 2, "granularity": "per_grouped_channel", "group_size": 8,
                           "enable_per_channel_scale": True, "cluster_dim": 1, "mode": "kmeans", "workflow": "data_free"}
    nm = handoff.from_prune(PruneSetting(structure="n_m", n=2, m=4))
    assert nm.tab == "Prune" and nm.fields["n"] == 2 and nm.fields["m"] == 4 and nm.fields["structure"] == "n_m"
    block = handoff.from_prune(PruneSetting(structure="block", sparsity=0.35, block_size=16))
    assert block.fields["target_sparsity"] == 0.35 and block.fields["block_size"] == 16 and block.notes == ()


def test_activation_finetune_and_bytes_handoffs_fill_the_compress_widgets():
    w8a8 = handoff.from_activations(observer="histogram", images=8, symmetric=False)
    assert w8a8.tab == "Activations W8A8" and len(w8a8.notes) == 2  # 8 → 16 images; Compress observes moving averages
    assert w8a8.session_values() == {"cfg.w8a8.mode": "asymmetric", "cfg.w8a8.workflow": "calibration",
                                     "cfg.w8a8.calibration_samples": 16, "learn.compress_tab": "Activations W8A8",
                                     "cfg.w8a8.weight_per_channel": True}  # a toggle left off is reset to the lesson's
    two = handoff.from_finetune(bits=2, steps=40, learning_rate=1e-3, batch_size=32)
    assert two.tab == "Palettize" and two.fields["n_bits"] == 2 and two.notes
    assert {k: two.session_values()[k] for k in ("cfg.palettize.workflow", "cfg.palettize.max_steps",
                                                  "cfg.palettize.learning_rate", "cfg.palettize.batch_size")} == {
        "cfg.palettize.workflow": "fine_tune", "cfg.palettize.max_steps": 40, "cfg.palettize.learning_rate": 1e-3,
        "cfg.palettize.batch_size": 32}
    four = handoff.from_finetune(bits=4, steps=20, learning_rate=2e-4, batch_size=32)
    assert four.tab == "Quantize weights" and four.fields["dtype"] == "int4" and four.fields["learning_rate"] == 3e-4
    prune = handoff.from_spec(PruneSpec(target_sparsity=0.75))
    assert prune.session_values()["cfg.prune.target_sparsity"] == 0.75 and prune.tab == "Prune"
