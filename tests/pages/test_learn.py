"""Learn page through app.py: every lesson's sliders move its charts and numbers; the button opens Compress."""

from __future__ import annotations

import itertools
import json
import re

import pytest

from core.learn.depthwise import accuracy_note
from core.models.sources import sample_manifest
from tests.pages.conftest import assert_clean, plotly_specs

PAGE = "pages/5_Learn.py"


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _values(array) -> list[float]:
    """A Plotly array from a chart's JSON: a plain list, or plotly's base64 typed-array form."""
    if isinstance(array, dict):
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"])).tolist()
    return list(array)


def _db(value: str) -> float:
    return float(value.split()[0])


def _open(app, lesson: str, *, layer: str | None = None):
    at = app(page=PAGE)
    assert_clean(at)
    if layer is not None:
        at.selectbox(key="cfg.learn.layer").select(layer).run()
    at.radio(key="cfg.learn.lesson").set_value(lesson).run()
    assert_clean(at)
    return at


def test_scale_lesson_sliders(app):
    at = app(page=PAGE)
    assert_clean(at)
    assert at.radio(key="cfg.learn.lesson").value == "scale"
    assert at.selectbox(key="cfg.learn.layer").value == "classifier.1"  # the largest layer of fashion_cnn
    four = _metrics(at)
    histogram = json.loads(plotly_specs(at)[0])
    assert [t.get("name") for t in histogram["data"]] == ["weights", "integer grid (15 levels)"]
    at.select_slider(key="cfg.learn.l1.bits").set_value(8).run()
    eight = _metrics(at)
    assert _db(eight["Weight SNR"]) > _db(four["Weight SNR"]) + 20  # four more bits, about 6 dB each
    assert float(eight["Scale"]) < float(four["Scale"]) / 10
    at.radio(key="cfg.learn.l1.range").set_value("percentile clip").run()
    at.select_slider(key="cfg.learn.l1.percentile").set_value(99.9).run()
    assert_clean(at)
    clipped = _metrics(at)
    assert clipped["Clipping error"] != "0" and int(clipped["Clipped weights"].replace(",", "")) > 0
    at.radio(key="cfg.learn.l1.mode").set_value("asymmetric").run()
    assert_clean(at)
    assert len(plotly_specs(at)) == 2


def test_granularity_lesson_outlier(app):
    at = _open(app, "granularity", layer="features.10")
    before = _metrics(at)
    assert _db(before["SNR · channel"]) > _db(before["SNR · tensor"])
    assert any("load the sample fashion_mobilenet" in c.value for c in at.caption)  # fashion_cnn has no depthwise conv
    at.toggle(key="cfg.learn.l2.outlier").set_value(True).run()
    at.select_slider(key="cfg.learn.l2.factor").set_value(32.0).run()
    assert_clean(at)
    after = _metrics(at)
    assert _db(after["SNR · tensor"]) < _db(before["SNR · tensor"])
    scales = json.loads(plotly_specs(at)[0])
    assert [t.get("name") for t in scales["data"]] == ["per channel", "per block", "per tensor", "outlier channel 5"]
    at.select_slider(key="cfg.learn.l2.block").set_value(4).run()
    assert _db(_metrics(at)["Scale cost · block"]) > _db(after["Scale cost · block"])


def test_granularity_lesson_on_fashion_mobilenet_explains_its_depthwise_convs(app):
    at = app(page=PAGE)
    at.session_state["model_choice"] = {"source_id": "sample:fashion_mobilenet"}  # what the Model page's Load sets
    at.run()
    at.selectbox(key="cfg.learn.layer").select("blocks.1.depthwise.0").run()  # one of its widely spread depthwise convs
    at.radio(key="cfg.learn.lesson").set_value("granularity").run()
    assert_clean(at)
    captions = " ".join(c.value for c in at.caption)
    assert "blocks.1.depthwise.0 is a depthwise conv: one 3×3 kernel per channel, 96 channels." in captions
    assert re.search(r"widest channel range is (\d+\.\d)× the median channel's", captions)
    assert float(re.search(r"widest channel range is (\d+\.\d)×", captions).group(1)) >= 20
    assert accuracy_note(sample_manifest()["fashion_mobilenet"]) in captions  # the manifest's measured numbers
    before = _metrics(at)
    assert _db(before["SNR · channel"]) > _db(before["SNR · tensor"])


def test_palettize_lesson_and_vector_on_the_hand_made_tensor(app):
    at = _open(app, "palettize", layer="features.10")
    assert _metrics(at)["LUTs"] == "1"
    at.radio(key="cfg.learn.l3.granularity").set_value("per_grouped_channel").run()
    at.select_slider(key="cfg.learn.l3.group").set_value(8).run()
    assert_clean(at)
    assert _metrics(at)["LUTs"] == "8"
    at.select_slider(key="cfg.learn.l3.show_group").set_value(3).run()
    assert_clean(at)
    at.selectbox(key="cfg.learn.layer").select("__toy__").run()
    at.radio(key="cfg.learn.l3.granularity").set_value("per_tensor").run()
    at.radio(key="cfg.learn.l3.cluster_dim").set_value(2).run()
    assert_clean(at)
    figure = json.loads(plotly_specs(at)[0])
    assert [t.get("name") for t in figure["data"]] == ["weight pairs", "LUT entries (16)"]
    assert _metrics(at)["Index bits"] == "2.000"  # 4 bits per pair of weights


def test_prune_lesson_patterns(app):
    at = _open(app, "prune", layer="features.10")
    half = _metrics(at)
    assert half["Sparsity"] == "50.0%"
    at.select_slider(key="cfg.learn.l4.sparsity").set_value(0.9).run()
    assert _metrics(at)["Sparsity"] == "90.0%"
    assert _db(_metrics(at)["Weight SNR"]) < _db(half["Weight SNR"])
    at.radio(key="cfg.learn.l4.structure").set_value("n_m").run()
    at.select_slider(key="cfg.learn.l4.nm").set_value("2:4").run()
    assert_clean(at)
    assert _metrics(at)["Sparsity"] == "50.0%" and _metrics(at)["Threshold"] == "—"
    at.radio(key="cfg.learn.l4.structure").set_value("block").run()
    assert_clean(at)
    curve = json.loads(plotly_specs(at)[-1])
    assert [t.get("name") for t in curve["data"]] == ["unstructured", "block 4", "this setting"]


@pytest.mark.slow
def test_every_lesson_offers_the_compress_button(app):
    """The button's effect (Compress opens with the setting) is checked in the browser test: AppTest does not
    deliver button clicks on a page it reached with switch_page (the same holds for the Home button)."""
    at = app(page=PAGE)
    for lesson, label in (
        ("scale", "quantize weights"),
        ("granularity", "quantize weights"),
        ("palettize", "palettize"),
        ("prune", "prune"),
        ("activations", "activations w8a8"),
        ("finetune", "palettize"),
    ):
        at.radio(key="cfg.learn.lesson").set_value(lesson).run()
        assert_clean(at)
        assert at.button(key=f"learn.open.{lesson}").label == f"Open Compress with this setting ({label})"


def test_activations_lesson_sliders(app):
    at = _open(app, "activations", layer="features.10")
    assert at.select_slider(key="cfg.learn.l5.images").value == 32
    few = _metrics(at)
    names = [t.get("name") for t in json.loads(plotly_specs(at)[0])["data"]]
    assert names == ["activations", "moving_average range", "min_max range", "histogram range"]
    at.select_slider(key="cfg.learn.l5.images").set_value(256).run()
    assert_clean(at)
    many = _metrics(at)
    assert many["Range"] != few["Range"]  # the moving average keeps moving as batches arrive
    at.radio(key="cfg.learn.l5.observer").set_value("min_max").run()
    minmax = _metrics(at)
    at.radio(key="cfg.learn.l5.observer").set_value("histogram").run()
    assert_clean(at)
    histogram = _metrics(at)
    # the histogram observer trades clipping for finer steps: a smaller scale than min/max over the same images
    assert float(histogram["Scale"]) < float(minmax["Scale"])
    assert _db(histogram["Output SNR · W8"]) == _db(minmax["Output SNR · W8"])  # weights do not depend on the observer
    assert at.button(key="learn.open.activations").label == "Open Compress with this setting (activations w8a8)"


@pytest.mark.slow
def test_finetune_lesson_runs_and_plots_the_loss(app):
    at = _open(app, "finetune", layer="features.10")
    ste = json.loads(plotly_specs(at)[0])
    assert [t.get("name") for t in ste["data"]] == ["forward: rounded", "no rounding", "backward: gradient used"]
    at.select_slider(key="cfg.learn.l6.steps").set_value(10).run()
    at.button(key="learn.l6.run").click().run()
    assert_clean(at)
    loss = json.loads(plotly_specs(at)[1])
    assert len(_values(loss["data"][0]["y"])) == 10
    values = _metrics(at)
    assert float(values["Rounded, before"].rstrip("%")) < float(values["Float accuracy"].rstrip("%"))
    at.select_slider(key="cfg.learn.l6.bits").set_value(8).run()  # not run yet at 8 bits: the button is back
    assert at.button(key="learn.l6.run").label == "Fine-tune 8-bit fashion_cnn (sample) for 10 steps"


@pytest.mark.slow
def test_finetune_lesson_trains_the_loaded_model_and_names_its_images(app):
    """With fashion_resnet loaded, lesson 6 fine-tunes fashion_resnet (not the sample CNN) and says which images
    its accuracies come from."""
    at = app()
    at.session_state["model_choice"] = {"source_id": "sample:fashion_resnet"}
    at.switch_page(PAGE).run()
    at.radio(key="cfg.learn.lesson").set_value("finetune").run()
    assert_clean(at)
    assert not any("instead" in i.value for i in at.info)  # the loaded model is the one trained
    at.select_slider(key="cfg.learn.l6.steps").set_value(10).run()
    assert at.button(key="learn.l6.run").label == "Fine-tune 2-bit fashion_resnet (sample) for 10 steps"
    at.button(key="learn.l6.run").click().run()
    assert_clean(at)
    title = json.loads(plotly_specs(at)[1])["layout"]["title"]["text"]
    assert "fashion_resnet (sample)" in title.replace("<br>", " ")  # long titles wrap inside the figure
    caption = next(c.value for c in at.caption if c.value.startswith("fashion_resnet (sample), accuracies on 300 "))
    assert "Fashion-MNIST test images" in caption and "class-balanced sample" in caption


@pytest.mark.slow
def test_bytes_lesson_exports_and_reads_back(app):
    at = _open(app, "bytes")
    at.radio(key="cfg.learn.l7.method").set_value("quantize_weights").run()
    layer_bits = json.loads(plotly_specs(at)[0])  # one layer first, before anything is exported
    assert [t.get("name") for t in layer_bits["data"]] == ["quantized weights", "scales"]
    at.button(key="learn.l7.run").click().run()
    assert_clean(at)
    names = [t.get("name") for t in json.loads(plotly_specs(at)[1])["data"]]
    assert names == ["size model (core.measure.size)", "in the .mlpackage"]
    values = _metrics(at)
    assert float(values["On disk"].split()[0]) > float(values["Tensor data"].split()[0])
    assert at.button(key="learn.open.bytes").label == "Open Compress with this setting (quantize weights)"


# --------------------------------------------------------------------------- the words agree with the charts


def _finding(at) -> str:
    return next(c.value for c in at.caption if c.value.startswith(":material/info:"))


def _trace(spec: str, name: str) -> dict:
    return next(t for t in json.loads(spec)["data"] if t.get("name") == name)


def test_scale_lesson_says_how_many_levels_its_chart_draws(app):
    at = app(page=PAGE)
    assert "there are 2ⁿ levels" not in at.markdown[0].value + "".join(m.value for m in at.markdown)
    for mode, levels in (("symmetric", 15), ("asymmetric", 16)):
        at.radio(key="cfg.learn.l1.mode").set_value(mode).run()
        assert_clean(at)
        histogram = json.loads(plotly_specs(at)[0])
        grid = next(t for t in histogram["data"] if t.get("name", "").startswith("integer grid"))
        assert grid["name"] == f"integer grid ({levels} levels)"
        assert len({x for x in _values(grid["x"]) if x is not None}) == levels  # one vertical line per level
        assert f"uses {levels}" in _finding(at) or f"uses all {levels}" in _finding(at)
        assert "2⁴ = 16 codes" in _finding(at)


def _last_step_moves(highs: list[float]) -> bool:
    """The chart's line still moves by more than 5 % between its last two points."""
    return abs(highs[-1] - highs[-2]) / abs(highs[-2]) > 0.05


def test_activations_lesson_words_follow_the_numbers(app):
    at = _open(app, "activations")
    counts = at.select_slider(key="cfg.learn.l5.images").options
    at.select_slider(key="cfg.learn.l5.images").set_value(counts[0]).run()
    for observer in ("min_max", "moving_average", "histogram"):
        at.radio(key="cfg.learn.l5.observer").set_value(observer).run()
        assert_clean(at)
        finding = _finding(at)
        clipped = _metrics(at)["Held-out clipped"]
        outside = re.match(rf":material/info: At N = {counts[0]}, (.+?) \(([\d,]+) of ([\d,]+)\) held-out values", finding)
        assert outside and outside.group(1) == clipped, finding  # the same share as the number beside it
        if outside.group(2) == "0":
            assert "already wide enough" in finding and "are clipped" not in finding
        else:
            assert "are clipped" in finding and "already wide enough" not in finding
        settling = json.loads(plotly_specs(at)[1])
        title = settling["layout"]["title"]["text"]
        assert "settles as N grows" not in title
        highs = _values(_trace(plotly_specs(at)[1], f"{observer} range")["y"])
        if _last_step_moves(highs):
            assert f"still moving at N = {counts[-1]}" in title and "still moving" in finding
        else:
            assert "still moving" not in title and "still moving" not in finding


def test_palettize_lesson_explains_what_the_lut_and_the_groups_change(app):
    at = _open(app, "palettize", layer="features.10")
    finding = _finding(at)
    snr = _db(_metrics(at)["Weight SNR"])
    assert f"At 4 bits this LUT reaches {snr:.1f} dB" in finding
    at.select_slider(key="cfg.learn.l3.bits").set_value(2).run()
    one = _db(_metrics(at)["Weight SNR"])
    at.radio(key="cfg.learn.l3.granularity").set_value("per_grouped_channel").run()
    at.select_slider(key="cfg.learn.l3.group").set_value(4).run()
    assert_clean(at)
    grouped = _db(_metrics(at)["Weight SNR"])
    finding = _finding(at)
    said = re.search(r"LUTs instead of one change the SNR by (only )?([+-]\d+\.\d) dB", finding)
    assert said and abs(float(said.group(2)) - (grouped - one)) <= 0.11  # the metrics are rounded to 0.1 dB too
    assert bool(said.group(1)) == ("share one shape" in finding) == (abs(float(said.group(2))) < 0.5)


def test_granularity_try_this_matches_the_channel_lines(app):
    """'Turn on the outlier channel: … every other channel's SNR falls, while per-channel SNR barely moves.'"""
    at = _open(app, "granularity", layer="features.10")
    before = {t["name"]: _values(t["y"]) for t in json.loads(plotly_specs(at)[1])["data"]}
    at.toggle(key="cfg.learn.l2.outlier").set_value(True).run()
    channel = at.select_slider(key="cfg.learn.l2.channel").value
    after = {t["name"]: _values(t["y"]) for t in json.loads(plotly_specs(at)[1])["data"]}
    others = [i for i in range(len(before["per tensor"])) if i != channel]
    assert all(after["per tensor"][i] < before["per tensor"][i] for i in others)
    assert max(abs(after["per channel"][i] - before["per channel"][i]) for i in range(len(others) + 1)) < 0.5


def test_prune_lesson_storage_claims_match_its_numbers(app):
    """'… saves bytes only beyond about 6 % sparsity and halves the size only at about 56 %', and the curve falls."""
    at = _open(app, "prune", layer="features.10")
    for sparsity, low, high in ((0.5, 8.0, 16.0), (0.6, 0.0, 8.0)):
        at.select_slider(key="cfg.learn.l4.sparsity").set_value(sparsity).run()
        bits = float(_metrics(at)["Bits per weight"])
        assert low < bits < high, (sparsity, bits)  # 50 %: not yet half of 16 bits; 60 %: below half
    curve = next(t for t in json.loads(plotly_specs(at)[-1])["data"] if t.get("name") == "unstructured")
    snr = [v for v in _values(curve["y"]) if v is not None]
    assert all(b <= a + 1e-6 for a, b in itertools.pairwise(snr))  # "SNR falls as sparsity rises"
