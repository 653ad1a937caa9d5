"""Explore in a real browser: a tiny custom sweep (palettize 4 and 8 bits on fashion_cnn) runs as jobs and its points
appear on the Pareto scatter; screenshots of the running and the finished sweep go to test-artifacts/."""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, assert_no_exception, wait_idle
from tests.e2e.conftest import full_page_screenshot as _screenshot

pytestmark = pytest.mark.browser

SWEEP_TIMEOUT_MS = 300_000


POINTS_JS = ("() => { const p = document.querySelectorAll('.js-plotly-plot')[0];"
             " return p ? p.querySelectorAll('.scatterlayer .point').length : 0; }")


def _points(page) -> int:
    """Markers drawn on the first (accuracy vs size) scatter; the Pareto front is a line without markers."""
    return page.evaluate(POINTS_JS)


def test_a_tiny_sweep_fills_the_scatter(server: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    expect.set_options(timeout=60_000)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(server)
            expect(page.get_by_text("fashion_cnn (sample)").first).to_be_visible()
            wait_idle(page)
            page.get_by_role("link", name="Explore").first.click()
            expect(page.get_by_role("heading", name="Explore", exact=True)).to_be_visible(timeout=180_000)
            wait_idle(page)

            # The default custom grid: palettize 4 and 8 bits. Choose it until its start button shows: on a busy
            # machine a click that lands while the page is still settling can be lost, and then no run follows it.
            start = page.get_by_role("button", name=re.compile(r"Start sweep \(2 runs\)"))
            custom = page.get_by_role("radio", name="Custom grid")
            deadline = time.monotonic() + 180
            while not start.is_visible():
                assert time.monotonic() < deadline, "the custom grid's start button never showed"
                if not custom.is_checked():
                    page.get_by_text("Custom grid", exact=True).click()
                page.wait_for_timeout(500)  # polling interval, not a correctness wait: the loop checks the page
            wait_idle(page)
            expect(page.get_by_text("Estimated time").first).to_be_visible()
            start.click()
            expect(page.get_by_role("button", name="Stop")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "explore_sweep_running.png"))

            page.wait_for_function(f"() => ({POINTS_JS})() >= 2", timeout=SWEEP_TIMEOUT_MS)
            wait_idle(page)
            assert _points(page) == 2
            names = page.evaluate("() => document.querySelectorAll('.js-plotly-plot')[0].data.map(t => t.name)")
            assert "Palettize" in names and "Pareto front" in names, names
            expect(page.get_by_text("2 done").first).to_be_visible()
            _screenshot(page, "explore_sweep_scatter.png")
            assert_no_exception(page, "explore")
        finally:
            browser.close()
