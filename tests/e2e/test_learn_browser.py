"""The Learn page in a real browser (Debian's Chromium + Playwright against `streamlit run app.py`).

Walks every lesson on fashion_cnn, moves a slider in each, saves a screenshot per lesson under test-artifacts/
and opens the Compress page from a lesson with its setting; then checks the first and the pruning lesson render on
fashion_resnet and torchvision:resnet18 (random weights) too. No exception text anywhere.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from bench.learn_rerender import choose_lesson, open_learn, select_layer, serve, slider_thumb, timed_move, wait_idle
from tests.e2e.test_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    _assert_no_exception,
    _require_chromium,
    _screenshot,
)

pytestmark = pytest.mark.browser

LESSONS = (
    ("1 · Scale and zero-point", "Bits", "learn_1_scale.png"),
    ("2 · Granularity: how many scales", "Bits", "learn_2_granularity.png"),
    ("3 · Palettization: a look-up table", "Bits per index", "learn_3_palettize.png"),
    ("4 · Pruning and sparsity", "Target sparsity", "learn_4_prune.png"),
)


def _chart_names(page) -> list[list[str]]:
    return page.evaluate(
        "() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(p => (p.data || []).map(t => t.name))"
    )


def _browser(pw):
    return pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def test_learn_walks_every_lesson_on_fashion_cnn() -> None:
    _require_chromium()
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve(model="sample:fashion_cnn", home=Path(tmp), log_path=Path(tmp) / "streamlit.log") as url,
        sync_playwright() as pw,
    ):
        browser = _browser(pw)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(60_000)
            open_learn(page, url, layer_prefix="features.10 ")
            for title, slider, shot in LESSONS:
                choose_lesson(page, title)
                seconds = timed_move(page, slider, "ArrowLeft")
                assert seconds < 30, f"{title}: a slider move took {seconds:.1f} s"
                page.wait_for_selector(".js-plotly-plot .main-svg")
                wait_idle(page)
                names = _chart_names(page)
                assert names and all(names), f"{title}: empty chart"
                expect(page.get_by_text("Try this:")).to_be_visible()
                _screenshot(page, shot)
                _assert_no_exception(page, title)

            # The hand-made tensor and vector palettization: pairs and their 2-D centroids.
            choose_lesson(page, LESSONS[2][0])
            select_layer(page, "hand-made")
            page.locator('[data-testid="stRadio"]').filter(has_text="cluster_dim").get_by_text("2 (vector").click()
            wait_idle(page)
            page.wait_for_function(
                "() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                ".some(p => (p.data || []).some(t => t.name === 'weight pairs'))"
            )
            _screenshot(page, "learn_3b_vector_toy.png")
            _assert_no_exception(page, "vector palettization")

            # The button opens Compress with the lesson's setting (3 bits in pairs → n_bits 3, cluster_dim 2).
            page.get_by_role("button", name="Open Compress with this setting (palettize)").click()
            expect(page.get_by_role("heading", name="Compress", exact=True)).to_be_visible()
            wait_idle(page)
            bits = slider_thumb(page, "Bits per weight")
            assert bits.get_attribute("aria-valuetext") == "3", bits.evaluate("e => e.outerHTML")
            vector = slider_thumb(page, "Vector size")
            assert vector.get_attribute("aria-valuetext") == "2", vector.evaluate("e => e.outerHTML")
            _assert_no_exception(page, "compress after learn")
        finally:
            browser.close()


@pytest.mark.parametrize("model,layer", [("sample:fashion_resnet", "layer3.conv2 "), ("torchvision:resnet18", None)])
def test_learn_on_other_models(model: str, layer: str | None) -> None:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with (
        tempfile.TemporaryDirectory() as tmp,
        serve(model=model, home=Path(tmp), log_path=Path(tmp) / "streamlit.log") as url,
        sync_playwright() as pw,
    ):
        browser = _browser(pw)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(180_000)
            open_learn(page, url, layer_prefix=layer)
            for title, slider, _ in (LESSONS[0], LESSONS[3]):
                choose_lesson(page, title)
                timed_move(page, slider, "ArrowRight")
                assert all(_chart_names(page)), f"{model} {title}: empty chart"
                _assert_no_exception(page, f"{model} {title}")
        finally:
            browser.close()
