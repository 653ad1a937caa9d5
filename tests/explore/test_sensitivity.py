"""Per-layer sensitivity on fashion_cnn: real coremltools compression of one layer at a time, real evaluation."""

from __future__ import annotations

import copy
import math
import time

import pytest
import torch

from core.compress import compress
from core.compress.layers import weight_layers
from core.data import load_bundled_subset
from core.explore.sensitivity import (
    SETTINGS,
    PartialForward,
    SensitivityConfig,
    SensitivityError,
    compress_one_layer,
    load_cached,
    run_sensitivity,
    single_layer_spec,
)
from core.explore.sensitivity_charts import sensitivity_heatmap_figure, sensitivity_table
from core.progress import Progress

CONFIG = SensitivityConfig(settings=("pal2", "pal8", "int8", "prune50"), eval_limit=200)


@pytest.fixture(scope="module")
def dataset():
    return load_bundled_subset()


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("sensitivity_cache")


@pytest.fixture(scope="module")
def result(fashion_cnn, dataset, cache_root):
    return run_sensitivity(model=fashion_cnn, dataset=dataset, config=CONFIG, cache_root=cache_root)


def test_every_layer_and_setting_is_probed(result, fashion_cnn) -> None:
    layers = list(weight_layers(fashion_cnn.module))
    assert len(result.frame) == len(layers) * len(CONFIG.settings)
    assert list(result.frame.drop_duplicates("layer").sort_values("order")["layer"]) == layers
    assert result.frame["compressed"].all(), result.frame[~result.frame["compressed"]]
    assert result.meta["eval_images"] == 200 and result.has_labels
    assert result.frame["layer_share"].drop_duplicates().sum() == pytest.approx(
        result.meta["weight_params"] * 2 / result.meta["fp16_bytes"])


def test_8_bit_is_closer_than_2_bit_on_every_layer(result) -> None:
    snr = result.frame.pivot(index="layer", columns="setting", values="snr_db")
    assert (snr["pal8"] > snr["pal2"]).all(), snr
    assert (snr["pal8"] > 30).all() and (snr["pal2"] < 30).all()
    bits = result.frame.pivot(index="layer", columns="setting", values="bits_per_weight")
    assert (bits["pal2"] < bits["int8"]).all() and (bits["int8"] < 16).all()


def test_a_probe_is_exactly_what_the_whole_model_spec_does_to_that_layer(fashion_cnn) -> None:
    name = list(weight_layers(fashion_cnn.module))[2]
    for key in ("pal2", "int8", "prune50"):
        probe = compress_one_layer(model=fashion_cnn, layer_name=name, setting=SETTINGS[key])
        whole = compress(model=fashion_cnn, spec=single_layer_spec(setting=SETTINGS[key], layer_name=name), dataset=None)
        assert [r.name for r in whole.layers if r.compressed] == [name]
        assert torch.equal(probe.module.get_submodule(name).weight, whole.module.get_submodule(name).weight), key
        assert probe.layers[0].bits == next(r for r in whole.layers if r.name == name).bits


def test_partial_forward_gives_the_full_forward_outputs(fashion_cnn, dataset) -> None:
    name = list(weight_layers(fashion_cnn.module))[3]
    layer = compress_one_layer(model=fashion_cnn, layer_name=name, setting=SETTINGS["pal2"]).module.get_submodule(name)
    inputs, _ = next(dataset.batches(dataset.eval_split(limit=64), batch_size=64))
    forward = PartialForward.build(copy.deepcopy(fashion_cnn.module).eval())
    assert forward.graph_module is not None
    partial = forward.outputs(layer_name=name, replacements={"p": layer}, batches=[inputs], progress=Progress(), label="")["p"]
    full_model = copy.deepcopy(fashion_cnn.module).eval()
    parent, _, leaf = name.rpartition(".")
    setattr(full_model.get_submodule(parent), leaf, layer)
    with torch.inference_mode():
        assert torch.equal(partial, full_model(inputs))


def test_cached_by_model_data_and_settings(result, fashion_cnn, dataset, cache_root) -> None:
    started = time.perf_counter()
    again = run_sensitivity(model=fashion_cnn, dataset=dataset, config=CONFIG, cache_root=cache_root)
    assert again.from_cache and time.perf_counter() - started < 5
    assert again.frame[["layer", "setting", "snr_db"]].equals(result.frame[["layer", "setting", "snr_db"]])
    assert load_cached(key=result.meta["key"], cache_root=cache_root) is not None
    other = SensitivityConfig(settings=("pal2",), eval_limit=200)
    assert load_cached(key=_key(fashion_cnn, dataset, other), cache_root=cache_root) is None


def _key(model, dataset, config):
    from core.explore.sensitivity import cache_key

    return cache_key(model=model, dataset=dataset, config=config)


def test_probe_histograms_are_stored(result) -> None:
    arrays = result.probe_weights(layer=result.frame["layer"].iloc[0], setting="pal2")
    assert {"original", "compressed", "lut"} <= set(arrays)
    assert len(set(arrays["compressed"].round(6).tolist())) <= 4  # a 2-bit LUT has 4 values


def test_heatmap_has_one_row_per_layer_and_a_clickable_marker_per_cell(result) -> None:
    layers = result.frame["layer"].nunique()
    figure = sensitivity_heatmap_figure(result.frame)
    heat, markers, share = figure.data
    assert len(heat.y) == layers and heat.z.shape == (layers, len(CONFIG.settings))
    assert len(markers.customdata) == layers * len(CONFIG.settings)
    assert len(share.y) == layers
    table = sensitivity_table(result.frame)
    assert table["output SNR (dB)"].is_monotonic_increasing
    assert sensitivity_heatmap_figure(result.frame, metric="top1_change").data[0].zmid == 0


@pytest.mark.slow
def test_synthetic_inputs_give_snr_only(fashion_cnn, tmp_path) -> None:
    config = SensitivityConfig(settings=("pal2", "pal8"), synthetic_images=16)
    synthetic = run_sensitivity(model=fashion_cnn, dataset=None, config=config, cache_root=tmp_path)
    assert not synthetic.has_labels and synthetic.frame["top1_change"].isna().all()
    assert "synthetic" in synthetic.meta["data"]
    assert synthetic.frame["snr_db"].map(math.isfinite).all()


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"settings": ()}, "settings"), ({"settings": ("pal5",)}, "settings"), ({"eval_limit": 5000}, "eval_limit"),
    ({"settings": ("pal2", "pal2")}, "settings"),
])
def test_bad_config_names_the_field(kwargs, field) -> None:
    with pytest.raises(SensitivityError, match=field):
        SensitivityConfig(**kwargs)


@pytest.mark.slow
def test_cli_prints_a_sorted_table(tmp_path, monkeypatch, capsys) -> None:
    from core.cli import main

    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path))
    code = main(["sensitivity", "--model", "sample:fashion_cnn", "--data", "bundled", "--settings", "pal2,pal8",
                 "--eval-limit", "100", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = [ln for ln in out.splitlines() if "palettize" in ln]
    assert len(lines) == 12 and "2-bit" in lines[0] and "8-bit" in lines[-1]
    assert main(["sensitivity", "--model", "sample:fashion_cnn", "--settings", "pal5", "--quiet"]) == 2
    assert "pal5" in capsys.readouterr().err
