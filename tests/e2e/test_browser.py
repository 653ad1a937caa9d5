"""End to end in a real browser: Debian's Chromium driven by Playwright against `streamlit run app.py`.

Home → Model → Compress (a 4-bit palettization of the sample model) → Compare scatter → Layers histogram,
with a screenshot of each page in test-artifacts/ and no exception text anywhere.
Skipped only when Chromium is missing outside CI; under CI=true a missing browser is a failure.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, assert_metrics_fit
from tests.e2e.conftest import assert_no_exception as _assert_no_exception
from tests.e2e.conftest import full_page_screenshot as _screenshot
from tests.e2e.conftest import trace_names as _trace_names
from tests.e2e.conftest import wait_idle as _wait_idle

pytestmark = pytest.mark.browser

RUN_TIMEOUT_MS = 300_000


def test_palettize_in_the_browser(server: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    expect.set_options(timeout=60_000)  # the first page load imports torch and loads the model
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(60_000)

            # Home: the sample model is already loaded and there is one obvious next step.
            page.goto(server)
            expect(page.get_by_role("heading", name="Compression Studio")).to_be_visible()
            expect(page.get_by_text("fashion_cnn (sample)").first).to_be_visible()
            _wait_idle(page)
            _screenshot(page, "01_home.png")
            _assert_no_exception(page, "home")

            # Model page: summary, baseline numbers, layers table.
            page.get_by_role("link", name="Model").first.click()
            expect(page.get_by_role("heading", name="Model", exact=True)).to_be_visible()
            expect(page.get_by_text("Top-1 accuracy").first).to_be_visible(timeout=180_000)
            _wait_idle(page, 180_000)
            _screenshot(page, "02_model.png")
            _assert_no_exception(page, "model")
            assert_metrics_fit(page, "model")
            page.set_viewport_size({"width": 1100, "height": 1000})
            _wait_idle(page)
            assert_metrics_fit(page, "model at 1100 px")
            page.set_viewport_size({"width": 1440, "height": 1000})

            # Compress: quick evaluation size, 4-bit palettization (the default tab and bits), run.
            page.get_by_role("link", name="Compress").first.click()
            expect(page.get_by_role("heading", name="Compress", exact=True)).to_be_visible()
            _wait_idle(page)
            page.locator('[data-testid="stSelectbox"]').filter(has_text="Evaluation images").click()
            page.get_by_role("option", name="500 images (fastest)").click()
            _wait_idle(page)
            expect(page.get_by_text("4", exact=True).first).to_be_visible()
            page.get_by_role("button", name="Run compression").first.click()
            # Live progress with a Cancel button while it runs.
            expect(page.get_by_role("button", name="Cancel run")).to_be_visible()
            expect(page.locator('[data-testid="stProgress"]').first).to_be_visible()
            page.get_by_role("button", name="Cancel run").scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "03a_compress_running.png"))
            expect(page.get_by_text("Saved as experiment")).to_be_visible(timeout=RUN_TIMEOUT_MS)
            expect(page.get_by_text("4-bit palettization, data-free").first).to_be_visible()
            _wait_idle(page)
            _screenshot(page, "03_compress_result.png")
            _assert_no_exception(page, "compress")
            assert_metrics_fit(page, "result card")
            page.set_viewport_size({"width": 1100, "height": 1000})  # a laptop: units must still show
            _wait_idle(page)
            assert_metrics_fit(page, "result card at 1100 px")
            page.set_viewport_size({"width": 1440, "height": 1000})

            # Compare: the experiment is a point on the accuracy-vs-size scatter, next to the baseline.
            page.get_by_role("button", name="See it in Compare").click()
            expect(page.get_by_role("heading", name="Compare", exact=True)).to_be_visible()
            page.wait_for_selector(".js-plotly-plot .scatterlayer .point", timeout=60_000)
            _wait_idle(page)
            names = _trace_names(page, 0)
            assert "Palettize" in names and "Baseline (fp16)" in names, names
            _screenshot(page, "04_compare.png")
            _assert_no_exception(page, "compare")
            for width in (1440, 1100):
                page.set_viewport_size({"width": width, "height": 1000})
                _wait_idle(page)
                assert_metrics_fit(page, f"compare at {width} px")
            page.set_viewport_size({"width": 1440, "height": 1000})

            # Layers: the histogram of a compressed layer with its LUT centroids.
            page.get_by_role("link", name="Layers").first.click()
            expect(page.get_by_role("heading", name="Weight histogram")).to_be_visible()
            page.wait_for_selector(".js-plotly-plot .barlayer .point", timeout=60_000)
            _wait_idle(page)
            names = _trace_names(page, 0)
            assert {"original", "compressed"} <= set(names), names
            assert any(n and n.startswith("LUT centroids") for n in names), names
            _screenshot(page, "05_layers.png")
            _assert_no_exception(page, "layers")
        finally:
            browser.close()


@pytest.fixture(autouse=True, scope="module")
def _clean_artifacts() -> Iterator[None]:
    if ARTIFACTS.is_dir():
        for png in ARTIFACTS.glob("0*.png"):
            png.unlink()
    yield
    shutil.rmtree(ARTIFACTS / "tmp", ignore_errors=True)
