"""Learn's bytes and bits per weight come from the product's size model (core.measure.size), not a copy of it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core.compress import compress
from core.learn.palettization import PaletteSetting, palettize
from core.learn.pruning import PruneSetting, prune
from core.learn.quantization import LinearSetting, linear_quantize
from core.measure.size import layer_bits_per_weight, layer_storage_bits
from core.specs import PalettizeSpec, PruneSpec, QuantizeWeightsSpec
from tests.learn.conftest import CONV

LEARN = Path(__file__).resolve().parents[2] / "core" / "learn"


@pytest.mark.parametrize(("spec", "lesson"), [
    (QuantizeWeightsSpec(dtype="int8", granularity="per_channel", mode="asymmetric"),
     lambda w: linear_quantize(w, LinearSetting(bits=8, symmetric=False, granularity="per_channel"))),
    (PalettizeSpec(n_bits=3, enable_per_channel_scale=True), lambda w: palettize(w, PaletteSetting(n_bits=3, per_channel_scale=True))),
    (PruneSpec(target_sparsity=0.75), lambda w: prune(w, PruneSetting(sparsity=0.75))),
], ids=["int8 asymmetric", "3-bit LUT + channel scale", "75 % sparsity"])
def test_a_lessons_bits_equal_what_the_size_model_gives_the_real_run(sample, conv_weight, spec, lesson) -> None:
    report = next(r for r in compress(model=sample, spec=spec, dataset=None).layers if r.name == CONV)
    result = lesson(conv_weight)
    product = layer_storage_bits(report)
    assert result.storage_bits() == {part: product[part] for part in result.storage_bits()}  # part by part
    assert sum(result.storage_bits().values()) == sum(product.values())  # no part the lesson leaves out
    # the bits per weight a lesson prints is the number the Layers page prints for the same layer
    assert result.bits_per_weight() == pytest.approx(layer_bits_per_weight(report.to_dict()), rel=1e-12)


def test_learn_declares_no_storage_widths_of_its_own() -> None:
    """A width constant (fp16 scales, int8 zero-points, 1-bit masks …) in core/learn would be a second size model."""
    found = []
    for path in sorted(LEARN.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, int):
                found += [f"{path.name}: {t.id}" for t in node.targets if isinstance(t, ast.Name) and t.id.endswith("_BITS")]
    assert found == []
