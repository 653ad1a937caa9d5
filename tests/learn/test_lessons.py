"""Lesson texts stay short, and every lesson hands the Compress page a valid spec with its notes."""

from __future__ import annotations

import pytest

from core.learn import handoff
from core.learn.lessons import LESSONS, MAX_WORDS, lesson
from core.learn.palettization import PaletteSetting
from core.learn.pruning import PruneSetting
from core.learn.quantization import LinearSetting


def test_lessons_are_short_and_distinct():
    assert [item.key for item in LESSONS] == ["scale", "granularity", "palettize", "prune"]
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
