"""Layers page on real experiments: histogram with the LUT / pruning threshold, coverage map and table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.pages.conftest import assert_clean, plotly_specs


@pytest.fixture(scope="module")
def studio_home(experiments_home: tuple[Path, list[int]]) -> Path:
    return experiments_home[0]


def test_palettized_layer_histogram_and_coverage(app, experiments_home) -> None:
    palettize_id, _ = experiments_home[1]
    at = app(page="pages/4_Layers.py")
    at.selectbox(key="layers.experiment").select(palettize_id).run()
    assert_clean(at)
    assert at.selectbox(key="layers.layer").value == "classifier.1"  # the biggest compressed layer
    histogram, coverage = (json.loads(s) for s in plotly_specs(at))
    names = [t.get("name") for t in histogram["data"]]
    assert names[:2] == ["original", "compressed"]
    assert "LUT centroids (16)" in names
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Bits per stored value"] == "4" and metrics["Weights"] == "802,816"
    how = next(c.value for c in at.caption if "bits / weight =" in c.value)
    assert f"{metrics['Bits / weight']} bits / weight = 4-bit values + " in how and "look-up tables" in how
    assert coverage["data"][0]["x"] == ["features.0", "features.3", "features.7", "features.10", "classifier.1", "classifier.4"]
    table = at.dataframe[0].value
    first = table.set_index("name").loc["features.0"]
    assert first["compressed"] == "no" and "weight_threshold" in first["why not compressed"]
    assert not {str(v).lower() for v in first} & {"none", "nan"}  # a layer without a number shows a dash


def test_pruned_layer_shows_threshold(app, experiments_home) -> None:
    _, prune_id = experiments_home[1]
    at = app(page="pages/4_Layers.py")
    at.selectbox(key="layers.experiment").select(prune_id).run()
    assert_clean(at)
    histogram = json.loads(plotly_specs(at)[0])
    assert any((t.get("name") or "").startswith("pruning threshold") for t in histogram["data"])
    sparsity = float(next(m for m in at.metric if m.label == "Sparsity").value.split()[0])
    assert sparsity == pytest.approx(50.0, abs=1.0)
    # "16" next to "9.00" is explained: half of the weights kept as fp16 values, plus a 1-bit mask per weight
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Bits per stored value"] == "16 (fp16)"
    per_weight = float(metrics["Bits / weight"])
    assert per_weight == pytest.approx(16 * (1 - sparsity / 100) + 1, abs=0.01)
    how = next(c.value for c in at.caption if "bits / weight =" in c.value)
    assert f"{per_weight:.2f} bits / weight = 50% of the weights kept × 16-bit values" in how
    assert "+ a 1-bit mask for every weight." in how
